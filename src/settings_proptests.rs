//! Property tests of role and source normalization: any input is handled
//! without a panic, and every valid spelling normalizes to the same value.

use proptest::prelude::*;

use super::*;

/// Few cases, so `make test` stays quick on two cores.
fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Writes `text` with each ASCII letter upper- or lowercase as the bits of `mask` select.
fn recase(text: &str, mask: &[bool]) -> String {
    text.chars()
        .zip(mask.iter().cycle())
        .map(|(c, upper)| match upper {
            true => c.to_ascii_uppercase(),
            false => c.to_ascii_lowercase(),
        })
        .collect()
}

fn guid() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_role_text_resolves_or_is_rejected(text in any::<String>()) {
        match resolve_role(&text) {
            Ok(id) => {
                prop_assert!(is_guid(&id));
                prop_assert_eq!(id.to_ascii_lowercase(), id);
            }
            Err(error) => prop_assert_eq!(error.value, text),
        }
    }

    #[test]
    fn guid_resolves_to_its_lowercase(id in guid()) {
        prop_assert_eq!(resolve_role(&id), Ok(id.to_ascii_lowercase()));
    }

    #[test]
    fn guid_with_surrounding_space_is_rejected(id in guid(), pad in "[ \t\n]{1,3}", before in any::<bool>()) {
        let padded = if before { format!("{pad}{id}") } else { format!("{id}{pad}") };
        prop_assert!(resolve_role(&padded).is_err());
    }

    #[test]
    fn role_name_and_id_round_trip(index in 0..ROLE_NAMES.len(), mask in prop::collection::vec(any::<bool>(), 1..8)) {
        let (name, id) = ROLE_NAMES[index];
        let resolved = resolve_role(name).unwrap();
        prop_assert_eq!(&resolved, id);
        // Graph may return the ID in any case; the name is still found.
        prop_assert_eq!(role_name(&recase(id, &mask)), Some(name));
        prop_assert_eq!(resolve_role(&recase(id, &mask)), Ok(id.to_string()));
    }

    #[test]
    fn any_source_text_parses_or_not(text in any::<String>()) {
        if let Some(source) = Source::parse(&text) {
            prop_assert!(source.as_str().eq_ignore_ascii_case(&text));
        }
    }

    #[test]
    fn source_round_trips_in_any_case(on_premises in any::<bool>(), mask in prop::collection::vec(any::<bool>(), 1..12)) {
        let source = if on_premises { Source::OnPremises } else { Source::Cloud };
        prop_assert_eq!(Source::parse(source.as_str()), Some(source));
        prop_assert_eq!(Source::parse(&recase(source.as_str(), &mask)), Some(source));
    }

    #[test]
    fn graph_echo_of_desired_matches(
        on_premises in any::<bool>(),
        ids in prop::collection::btree_set(guid(), 0..5),
        mask in prop::collection::vec(any::<bool>(), 1..40),
        reverse in any::<bool>(),
        null_for_empty in any::<bool>(),
    ) {
        let source = if on_premises { Source::OnPremises } else { Source::Cloud };
        let desired = DesiredSettings {
            source,
            allowed_roles: ids.iter().map(|id| resolve_role(id).unwrap()).collect(),
        };
        // Graph returns the roles in any order and case, and may return
        // null for an empty list.
        let mut returned: Vec<String> = ids.iter().map(|id| recase(id, &mask)).collect();
        if reverse {
            returned.reverse();
        }
        let observed = ObservedSettings {
            source: Some(recase(source.as_str(), &mask)),
            allowed_roles: if returned.is_empty() && null_for_empty { None } else { Some(returned) },
        };
        prop_assert!(observed.matches(&desired));
    }

    #[test]
    fn extra_or_missing_role_is_drift(
        ids in prop::collection::btree_set(guid(), 1..5),
        drop_one in any::<bool>(),
        extra in guid(),
    ) {
        let desired = DesiredSettings {
            source: Source::Cloud,
            allowed_roles: ids.iter().map(|id| id.to_ascii_lowercase()).collect(),
        };
        let mut returned: Vec<String> = desired.allowed_roles.iter().cloned().collect();
        if drop_one {
            returned.pop();
        } else {
            prop_assume!(!desired.allowed_roles.contains(&extra.to_ascii_lowercase()));
            returned.push(extra);
        }
        let observed = ObservedSettings {
            source: Some("cloud".into()),
            allowed_roles: Some(returned),
        };
        prop_assert!(!observed.matches(&desired));
    }
}
