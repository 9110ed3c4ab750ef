//! The offline validator used by `plan` and `apply` rejects what the API
//! server rejects, with the same message, and accepts every example.

mod common;

use std::path::PathBuf;

use photo_policy_operator::oneshot::load_policies;
use photo_policy_operator::validation::{admit, validate};
use photo_policy_operator::yaml::load_documents;
use serde_json::json;

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
        for value in load_documents(&text).unwrap() {
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

/// Writes `text` to a file of its own, as a user would hand it to `plan`.
fn manifest_file(case: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ppo-validation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.yaml", common::slug(case)));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn valid_manifests_accepted_offline() {
    let cases = common::valid_manifests();
    assert!(cases.len() >= 20, "the list shrank to {}", cases.len());
    for case in cases {
        let path = manifest_file(&case.case, &case.manifest);
        let loaded = load_policies(path.to_str().unwrap());
        assert!(loaded.is_ok(), "{}: {}", case.case, loaded.unwrap_err());
    }
}

#[test]
fn invalid_manifests_rejected_offline() {
    let cases = common::invalid_manifests();
    assert!(cases.len() >= 20, "the list shrank to {}", cases.len());
    for case in cases {
        let path = manifest_file(&case.case, &case.manifest);
        let error = match load_policies(path.to_str().unwrap()) {
            Ok(_) => panic!("{}: accepted", case.case),
            Err(error) => error.to_string(),
        };
        assert!(
            error.contains(&case.expect),
            "{}: expected a message containing {:?}, got {error}",
            case.case,
            case.expect
        );
    }
}

#[test]
fn nulls_are_dropped_and_defaults_filled_in() {
    let mut manifest = common::manifest("nulls", &Default::default());
    manifest["spec"]["cloud"] = json!(null);
    manifest["spec"]["allowedRoles"] = json!(null);
    manifest["spec"]["credentials"]["secretRef"]["key"] = json!(null);
    manifest["metadata"]["labels"] = json!({"a": null});
    let admitted = admit(&manifest).unwrap();
    assert_eq!(admitted["spec"]["cloud"], "Global");
    assert_eq!(admitted["spec"]["suspend"], false);
    assert_eq!(
        admitted["spec"]["credentials"]["secretRef"]["key"],
        "clientSecret"
    );
    assert!(admitted["spec"].get("allowedRoles").is_none());
    assert_eq!(admitted["metadata"]["labels"], json!({}));
}

#[test]
fn type_errors_use_the_api_server_wording() {
    let mut manifest = common::manifest("types", &Default::default());
    manifest["spec"]["suspend"] = json!("yes");
    let errors = validate(&manifest).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        r#"spec.suspend: Invalid value: "string": spec.suspend in body must be of type boolean: "string""#
    );
}

#[test]
fn metadata_rules() {
    let rejected = |metadata: serde_json::Value| {
        let mut manifest = common::manifest("meta", &Default::default());
        manifest["metadata"] = metadata;
        validate(&manifest).unwrap_err()[0].to_string()
    };

    let error = rejected(json!({"name": "a", "namespace": "Bad.NS"}));
    assert!(
        error.starts_with(
            "metadata.namespace: Invalid value: \"Bad.NS\": a lowercase RFC 1123 label"
        ),
        "{error}"
    );
    let error = rejected(json!({"name": "a", "namespace": "n".repeat(64)}));
    assert!(
        error.contains("must be no more than 63 characters"),
        "{error}"
    );

    let error = rejected(json!({"namespace": "default"}));
    assert!(
        error.contains("name or generateName is required"),
        "{error}"
    );
    let error = rejected(json!({"generateName": "policy-"}));
    assert!(error.contains("cannot use generateName"), "{error}");

    let error = rejected(json!({"name": "a", "labels": {"example.com/": "x"}}));
    assert!(error.contains("name part must be non-empty"), "{error}");
    let error = rejected(json!({"name": "a", "annotations": {"a": "x".repeat(256 * 1024)}}));
    assert!(
        error.contains("Too long: may not be more than 262144 bytes"),
        "{error}"
    );
    let error = rejected(json!({"name": "a", "creationTimestamp": "yesterday"}));
    assert!(error.contains("parsing time \"yesterday\""), "{error}");
    let error = rejected(json!(["a"]));
    assert!(error.contains("cannot unmarshal array"), "{error}");
}
