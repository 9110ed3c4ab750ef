//! The offline validator used by `plan` and `apply` rejects what the API
//! server rejects, with the same message, and accepts every example.

mod common;

use photo_policy_operator::validation::validate;

#[test]
fn invalid_policies_rejected_offline() {
    let cases = common::invalid_cases();
    assert!(
        cases.len() >= 15,
        "the fixture list shrank to {}",
        cases.len()
    );
    for case in cases {
        let manifest = common::manifest(&common::slug(&case.case), &case.spec);
        let errors = validate(&manifest).expect_err(&case.case);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|line| line.contains(&case.expect)),
            "{}: expected a message containing {:?}, got {text:?}",
            case.case,
            case.expect
        );
    }
}

#[test]
fn base_spec_is_valid() {
    let manifest = common::manifest("base", &Default::default());
    assert_eq!(validate(&manifest), Ok(()));
}

#[test]
fn examples_are_valid() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value: serde_json::Value = serde::Deserialize::deserialize(document).unwrap();
            if value.get("kind").and_then(|k| k.as_str()) != Some("PhotoUpdatePolicy") {
                continue;
            }
            assert_eq!(validate(&value), Ok(()), "{}", path.display());
            seen += 1;
        }
    }
    assert!(
        seen >= 5,
        "expected the five documented settings, found {seen}"
    );
}

#[test]
fn metadata_name_must_be_dns_subdomain() {
    let mut manifest = common::manifest("base", &Default::default());
    manifest["metadata"]["name"] = "Not_Valid".into();
    let errors = validate(&manifest).unwrap_err();
    assert_eq!(errors[0].path, "metadata.name");
}

#[test]
fn lowercase_onpremises_without_roles_is_valid() {
    let mut manifest = common::manifest("base", &Default::default());
    manifest["spec"]["source"] = "onpremises".into();
    assert_eq!(validate(&manifest), Ok(()));
}
