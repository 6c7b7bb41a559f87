//! Routes: which device topics a route takes (`from`, an MQTT filter that may name the
//! device level `{device}`), and which cloud topic its batches go to (`to`, a template).
//!
//! Invariants: a [`TopicFilter`] always converts to a valid MQTT subscription filter
//! (captures become `+`); a [`TopicTemplate`] only contains the placeholders it knows, so
//! rendering never fails and never yields a wildcard.

use std::fmt;

/// One level of a topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`: any one level.
    Plus,
    /// `{name}`: any one level, captured under `name`.
    Capture(String),
    /// `#`: the rest (last level only).
    Hash,
}

/// A route's `from`: an MQTT topic filter with optional named captures, e.g.
/// `devices/{device}/events` or `devices/+/events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    text: String,
    levels: Vec<Level>,
}

impl TopicFilter {
    /// Parses a filter; the error says which level is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a topic filter cannot be empty".into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::Plus,
                "#" if index + 1 == parts.len() => Level::Hash,
                "#" => return Err(format!("`#` must be the last level of {text:?}")),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!("capture {p:?} in {text:?} must be a plain name such as {{device}}"));
                    }
                    Level::Capture(name.to_owned())
                }
                p if p.contains(['+', '#', '{', '}']) => {
                    return Err(format!(
                    "level {p:?} of {text:?} mixes text with a wildcard or capture; a wildcard must be a whole level"
                ))
                }
                p => Level::Literal(p.to_owned()),
            };
            levels.push(level);
        }
        Ok(TopicFilter { text: text.to_owned(), levels })
    }

    /// The MQTT subscription filter (captures become `+`).
    pub fn mqtt_filter(&self) -> String {
        self.levels
            .iter()
            .map(|level| match level {
                Level::Literal(text) => text.as_str(),
                Level::Plus | Level::Capture(_) => "+",
                Level::Hash => "#",
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether this filter has a level that names the device (`{device}`, or else a `+`).
    pub fn has_device_level(&self) -> bool {
        self.levels.iter().any(|l| matches!(l, Level::Plus) || matches!(l, Level::Capture(n) if n == "device"))
    }

    /// Matches a topic; on a match, returns the device level: the `{device}` capture, or
    /// else the level matched by the first `+` (None when the filter has neither).
    pub fn matches<'t>(&self, topic: &'t str) -> Option<Option<&'t str>> {
        let mut device = None;
        let mut first_plus = None;
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Hash => return Some(device.or(first_plus)),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(text) if text != part => return None,
                        Level::Plus => {
                            first_plus.get_or_insert(part);
                        }
                        Level::Capture(name) if name == "device" => device = Some(part),
                        _ => {}
                    }
                }
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(device.or(first_plus))
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A piece of a cloud topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Gateway,
    Route,
    Device,
    Type,
}

/// A route's `to`: a cloud topic with `{gateway}`, `{route}`, `{device}`, `{type}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    text: String,
    pieces: Vec<Piece>,
}

impl TopicTemplate {
    /// Parses a template; unknown placeholders and wildcards are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a cloud topic cannot be empty".into());
        }
        if text.contains(['+', '#']) {
            return Err(format!("cloud topic {text:?} cannot contain the wildcards `+` or `#`"));
        }
        if text.split('/').any(str::is_empty) {
            return Err(format!("cloud topic {text:?} has an empty level (a leading, trailing or double `/`)"));
        }
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or_else(|| format!("unclosed `{{` in cloud topic {text:?}"))?;
            let name = &rest[open + 1..open + close];
            pieces.push(match name {
                "gateway" => Piece::Gateway,
                "route" => Piece::Route,
                "device" => Piece::Device,
                "type" => Piece::Type,
                other => {
                    return Err(format!(
                        "unknown placeholder {{{other}}} in cloud topic {text:?}; known: {{gateway}} {{route}} {{device}} {{type}}"
                    ))
                }
            });
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("stray `}}` in cloud topic {text:?}"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        Ok(TopicTemplate { text: text.to_owned(), pieces })
    }

    /// Whether the topic depends on the event (`{device}` or `{type}`): then a batch holds
    /// a contiguous run of events that share that topic.
    pub fn per_event(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Device | Piece::Type))
    }

    /// The topic for one batch.
    pub fn render(&self, gateway: &str, route: &str, device: &str, kind: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for piece in &self.pieces {
            out.push_str(match piece {
                Piece::Text(text) => text,
                Piece::Gateway => gateway,
                Piece::Route => route,
                Piece::Device => device,
                Piece::Type => kind,
            });
        }
        out
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plus_level_names_the_device() {
        let filter = TopicFilter::parse("devices/+/events").unwrap();
        assert_eq!(filter.matches("devices/d1/events"), Some(Some("d1")));
        assert_eq!(filter.matches("devices/d1/other"), None);
        assert_eq!(filter.matches("devices/d1/events/x"), None);
        assert_eq!(filter.matches("devices/d1"), None);
    }

    #[test]
    fn a_device_capture_wins_over_plus_and_becomes_plus_for_mqtt() {
        let filter = TopicFilter::parse("site/+/{device}/#").unwrap();
        assert_eq!(filter.mqtt_filter(), "site/+/+/#");
        assert_eq!(filter.matches("site/a/d7/x/y"), Some(Some("d7")));
        assert_eq!(filter.matches("site/a/d7"), Some(Some("d7")));
    }

    #[test]
    fn malformed_filters_are_refused_with_the_reason() {
        assert!(TopicFilter::parse("").is_err());
        assert!(TopicFilter::parse("a/#/b").unwrap_err().contains("last level"));
        assert!(TopicFilter::parse("a/b+/c").unwrap_err().contains("whole level"));
        assert!(TopicFilter::parse("a/{dev ice}").is_err());
    }

    #[test]
    fn templates_render_every_placeholder() {
        let t = TopicTemplate::parse("gw/{gateway}/{route}/{device}/{type}").unwrap();
        assert!(t.per_event());
        assert_eq!(t.render("g", "r", "d", "t"), "gw/g/r/d/t");
        let t = TopicTemplate::parse("gateways/{gateway}/telemetry").unwrap();
        assert!(!t.per_event());
        assert_eq!(t.render("gw-01", "r", "d", "t"), "gateways/gw-01/telemetry");
    }

    proptest::proptest! {
        /// Device ids and types are validated (`edge_event::is_id_char`, non-empty), so a
        /// rendered topic never gains a wildcard or an empty level.
        #[test]
        fn rendered_topics_are_valid_mqtt_topic_names(
            device in "[A-Za-z0-9._:-]{1,32}", kind in "[A-Za-z0-9._:-]{1,32}",
            template in proptest::sample::select(vec![
                "gateways/{gateway}/telemetry", "{gateway}/{route}/{device}/{type}", "t/{device}-{type}", "{type}",
            ])
        ) {
            proptest::prop_assume!(edge_event::validate_device_id(&device).is_ok());
            proptest::prop_assume!(edge_event::validate_event_type(&kind).is_ok());
            let topic = TopicTemplate::parse(template).unwrap().render("gw-01", "telemetry", &device, &kind);
            proptest::prop_assert!(!topic.contains(['+', '#', '\0']));
            proptest::prop_assert!(topic.split('/').all(|level| !level.is_empty()), "{}", topic);
        }

        /// A filter matches exactly the topics its MQTT form matches, level by level.
        #[test]
        fn a_filter_never_matches_a_topic_with_another_shape(
            levels in proptest::collection::vec(proptest::sample::select(vec!["devices", "events", "d1", "x"]), 1..5)
        ) {
            let topic = levels.join("/");
            let filter = TopicFilter::parse("devices/+/events").unwrap();
            let matched = filter.matches(&topic);
            let want = levels.len() == 3 && levels[0] == "devices" && levels[2] == "events";
            proptest::prop_assert_eq!(matched.is_some(), want);
            if want {
                proptest::prop_assert_eq!(matched, Some(Some(levels[1])));
            }
        }
    }

    #[test]
    fn templates_refuse_empty_levels() {
        assert!(TopicTemplate::parse("a//b").unwrap_err().contains("empty level"));
        assert!(TopicTemplate::parse("/a").is_err());
        assert!(TopicTemplate::parse("a/").is_err());
    }

    #[test]
    fn templates_refuse_unknown_placeholders_and_wildcards() {
        assert!(TopicTemplate::parse("a/{nope}").unwrap_err().contains("unknown placeholder"));
        assert!(TopicTemplate::parse("a/+").is_err());
        assert!(TopicTemplate::parse("a/{device").is_err());
        assert!(TopicTemplate::parse("a/}").is_err());
    }
}
