//! Kafka's naming rules for topics (clients/.../internals/Topic.java): the longest name and the
//! characters a name may hold. Shared by the settings file's checks and the topics service.

/// The longest topic name Kafka accepts, in characters.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Whether `c` may appear in a topic name: ASCII letters and digits, `.`, `_` and `-`.
pub fn is_legal_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

/// Kafka's topic name rules: 1 to 249 characters of `[a-zA-Z0-9._-]`, and not `.` or `..`.
/// The error is the message clients and operators see.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be '{name}'"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name is {} characters long; the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !is_legal_topic_char(*c)) {
        return Err(format!(
            "topic name '{name}' contains '{c}'; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("customer-events").is_ok());
        assert!(validate_topic_name("customer-events.dlq").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
        assert!(validate_topic_name(&"x".repeat(249)).is_ok());
    }

    #[test]
    fn messages_name_the_rule() {
        assert_eq!(
            validate_topic_name(&"x".repeat(250)).unwrap_err(),
            "topic name is 250 characters long; the limit is 249"
        );
        assert_eq!(
            validate_topic_name(".").unwrap_err(),
            "topic name cannot be '.'"
        );
    }
}
