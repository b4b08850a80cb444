//! MQTT topic templates of a device profile: the contract's one rule (`wire::topics`), applied to a profile's lists so an operator hears which entry is wrong.

use crate::admin::Bad;

pub use wire::topics::{DEFAULT_PUBLISH, DEFAULT_SUBSCRIBE, MAX_TEMPLATES, check};

/// Checks a list (1–8 templates); the error names the entry (`publish[2]`).
pub fn check_list(templates: &[String], field: &str) -> Result<(), Bad> {
    if templates.is_empty() || templates.len() > MAX_TEMPLATES {
        return Err(Bad::new(field, "needs 1-8 topics"));
    }
    for (i, t) in templates.iter().enumerate() {
        check(t).map_err(|problem| Bad::new(format!("{field}[{i}]"), problem))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_names_the_entry() {
        let list = |ts: &[&str]| ts.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
        assert!(check_list(&list(&["a", "b/{DEVICE_ID}"]), "publish").is_ok());
        let bad = check_list(&list(&["a", "b/#"]), "subscribe").unwrap_err();
        assert_eq!(
            bad,
            Bad::new(
                "subscribe[1]",
                "a device's topics are exact: no wildcards + or #"
            )
        );
        assert_eq!(
            check_list(&[], "publish").unwrap_err(),
            Bad::new("publish", "needs 1-8 topics")
        );
        assert!(check_list(&list(&["a"; 9]), "publish").is_err());
    }
}
