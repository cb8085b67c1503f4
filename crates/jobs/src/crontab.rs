//! `etc/crontab`, then `etc/crontab.local` (docs/jobs.md): each a JSON array of `{"type":
//! "local"|"server", "cron": "SEC MIN HOUR DOM MON DOW", "job": JOB, "id"?, "disabled"?,
//! "per_node"?, "tag"?}`. Schedules are parsed by the `cron`
//! crate in local time. The day of week follows the usual crontab convention (0 or 7 = Sunday,
//! 1 = Monday, as node-cron and the original did); the `cron` crate counts 1 = Sunday, so numeric
//! days are translated (names such as `Mon` pass unchanged).
//!
//! A file that does not parse is refused as a whole, naming the entry and the reason, and the
//! schedule that was running stays.

use super::{parse_spec, Job, JobError, JobType};
use chrono::{DateTime, Local};
use serde_json::Value;
use std::path::Path;
use std::str::FromStr;

/// One scheduled entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The cron spec as written.
    pub(crate) cron: String,
    pub(crate) schedule: cron::Schedule,
    pub(crate) jobs: Vec<Job>,
    pub(crate) id: Option<String>,
    /// Runs on every node at each tick (default: once per tick across the nodes sharing the
    /// queue).
    pub(crate) per_node: bool,
}

impl Entry {
    /// The next time after `t`.
    pub(crate) fn next_after(&self, t: &DateTime<Local>) -> Option<DateTime<Local>> {
        self.schedule.after(t).next()
    }
}

/// Translates the day-of-week field from crontab numbering (0-7, Sunday 0 or 7) to the `cron`
/// crate's (1-7, Sunday 1): numeric items, ranges and steps become the explicit list of days.
pub(crate) fn translate_dow(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" {
        return Ok(field.to_string());
    }
    let mut out: Vec<String> = Vec::new();
    for item in field.split(',') {
        if item.bytes().any(|b| b.is_ascii_alphabetic()) {
            out.push(item.to_string()); // names: the crate reads them itself
            continue;
        }
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (
                b,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("bad step in day of week {item:?}"))?,
            ),
            None => (item, 1),
        };
        let num = |s: &str| {
            s.parse::<u32>()
                .ok()
                .filter(|d| *d <= 7)
                .ok_or_else(|| format!("day of week {s:?} is not 0-7"))
        };
        let (lo, hi) = match base {
            "*" => (0, 6),
            b => match b.split_once('-') {
                Some((a, z)) => (num(a)?, num(z)?),
                None if step > 1 => (num(b)?, 6),
                None => (num(b)?, num(b)?),
            },
        };
        if lo > hi {
            return Err(format!("day of week range {base:?} runs backwards"));
        }
        let mut d = lo;
        while d <= hi {
            // 0 and 7 are Sunday = 1 in the crate; Monday 1 = 2, ... Saturday 6 = 7.
            let crate_day = d % 7 + 1;
            let s = crate_day.to_string();
            if !out.contains(&s) {
                out.push(s);
            }
            d += step;
        }
    }
    Ok(out.join(","))
}

/// Parses a 6-field cron spec (seconds first), with crontab day-of-week numbering.
pub(crate) fn schedule(spec: &str) -> Result<cron::Schedule, String> {
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "{spec:?} has {} fields; a cron spec has 6: SEC MIN HOUR DAY MONTH WEEKDAY",
            fields.len()
        ));
    }
    let dow = translate_dow(fields[5])?;
    let text = format!("{} {dow}", fields[..5].join(" "));
    cron::Schedule::from_str(&text).map_err(|e| format!("{spec:?}: {e}"))
}

/// Parses the crontab text; the first bad entry makes the whole file an error.
pub(crate) fn parse(text: &str) -> Result<Vec<Entry>, JobError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| JobError::Bad(format!("not JSON: {e}")))?;
    let Value::Array(items) = v else {
        return Err(JobError::Bad("the crontab must be a JSON array".into()));
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = |msg: String| JobError::Bad(format!("entry {}: {msg}", i + 1));
        let Value::Object(m) = item else {
            return Err(at("an entry must be an object".into()));
        };
        if super::flag(m.get("disabled")) {
            continue;
        }
        let kind = JobType::parse(m.get("type").and_then(Value::as_str).unwrap_or("local"))
            .map_err(|e| at(e.to_string()))?;
        let cron = m
            .get("cron")
            .and_then(Value::as_str)
            .ok_or_else(|| at("cron is required".into()))?;
        let schedule = schedule(cron).map_err(at)?;
        let job = m.get("job").ok_or_else(|| at("job is required".into()))?;
        let jobs = parse_spec(job, kind).map_err(|e| at(e.to_string()))?;
        out.push(Entry {
            cron: cron.to_string(),
            schedule,
            jobs,
            id: m.get("id").and_then(Value::as_str).map(str::to_string),
            per_node: super::flag(m.get("per_node")),
        });
    }
    Ok(out)
}

/// The crontab files of a home: `etc/crontab`, then `etc/crontab.local` (site additions).
pub(crate) fn paths(etc: &Path) -> [std::path::PathBuf; 2] {
    [etc.join("crontab"), etc.join("crontab.local")]
}

/// Reads and parses every file of `paths` in order (missing ones are empty); one bad file makes
/// the whole schedule an error.
pub(crate) fn load_all(paths: &[std::path::PathBuf]) -> Result<Vec<Entry>, JobError> {
    let mut out = Vec::new();
    for p in paths {
        out.extend(load(p)?);
    }
    Ok(out)
}

/// Reads and parses the crontab file; a missing file is an empty crontab.
pub(crate) fn load(path: &Path) -> Result<Vec<Entry>, JobError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| JobError::Bad(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(JobError::Bad(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike};

    #[test]
    fn day_of_week_uses_crontab_numbers() {
        assert_eq!(translate_dow("1,3").expect("dow"), "2,4");
        assert_eq!(translate_dow("0").expect("dow"), "1");
        assert_eq!(translate_dow("7").expect("dow"), "1");
        assert_eq!(translate_dow("1-5").expect("dow"), "2,3,4,5,6");
        assert_eq!(translate_dow("*/2").expect("dow"), "1,3,5,7");
        assert_eq!(translate_dow("Mon,Wed").expect("dow"), "Mon,Wed");
        assert_eq!(translate_dow("*").expect("dow"), "*");
        assert!(translate_dow("8").is_err());
        assert!(translate_dow("5-1").is_err());
        assert!(translate_dow("1/0").is_err());
        // the example in docs/jobs.md: 01:01:00 on Mondays and Wednesdays.
        let s = schedule("0 1 1 * * 1,3").expect("schedule");
        let from = Local
            .with_ymd_and_hms(2024, 1, 1, 12, 0, 0)
            .single()
            .expect("time"); // a Monday
        let next: Vec<_> = s.after(&from).take(2).collect();
        assert_eq!(next[0].weekday(), chrono::Weekday::Wed);
        assert_eq!(next[1].weekday(), chrono::Weekday::Mon);
        assert_eq!(
            (next[0].hour(), next[0].minute(), next[0].second()),
            (1, 1, 0)
        );
    }

    #[test]
    fn crontab_entries_and_errors() {
        let text = r#"[
            {"type": "local", "cron": "*/5 * * * * *", "job": {"a.b": {"x": 1}}, "id": "one"},
            {"type": "server", "cron": "0 0 * * * *", "job": "c"},
            {"cron": "0 0 * * * *", "job": "d", "disabled": true}
        ]"#;
        let e = parse(text).expect("crontab");
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].jobs[0].name, "a.b");
        assert_eq!(e[0].id.as_deref(), Some("one"));
        assert_eq!(e[1].jobs[0].kind, JobType::Server);
        assert!(parse("").expect("empty").is_empty());
        for (bad, why) in [
            ("{", "not JSON"),
            ("{}", "array"),
            (r#"[{"cron":"* * * * *","job":"a"}]"#, "5 fields"),
            (r#"[{"cron":"* * * * * * * *","job":"a"}]"#, "fields"),
            (r#"[{"cron":"x * * * * *","job":"a"}]"#, "entry 1"),
            (r#"[{"cron":"* * * * * *"}]"#, "job is required"),
            (
                r#"[{"cron":"* * * * * *","job":"a","type":"remote"}]"#,
                "local or server",
            ),
            (
                r#"[{"cron":"* * * * * *","job":{"a b":{}}}]"#,
                "not a job name",
            ),
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains(why) || why == "5 fields" && err.contains("has 5 fields"),
                "{bad}: {err}"
            );
        }
    }
}
