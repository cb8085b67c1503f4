//! Request parameters from the query string, a form body or a JSON body (SPEC §6: a JSON body
//! replaces the query), in order of appearance.

use bytes::Bytes;

/// Decoded `name=value` pairs of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// The JSON body's fields with their types, when the body was a JSON object.
    json: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Params {
    /// The query string, then an `application/x-www-form-urlencoded` body; an `application/json`
    /// object body replaces both. A JSON body that does not parse, or is not an object, is refused.
    pub fn new(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> Result<Params, String> {
        if content_type.is_some_and(|c| c.starts_with("application/json")) && !body.is_empty() {
            let map = match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => return Err("the JSON body must be an object".into()),
                Err(e) => return Err(format!("invalid JSON body: {e}")),
            };
            let pairs = map
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k.clone(), s.clone()),
                    other => (k.clone(), other.to_string()),
                })
                .collect();
            return Ok(Params {
                pairs,
                json: Some(map),
            });
        }
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Ok(Params { pairs, json: None })
    }

    /// Every parameter, in order (the last of a repeated name wins where one value is wanted).
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The typed value of a JSON body field.
    pub fn json(&self, name: &str) -> Option<&serde_json::Value> {
        self.json.as_ref().and_then(|m| m.get(name))
    }

    /// The last value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_form_body() {
        let body = Bytes::from_static(b"b=2&name=x%20y");
        let p = Params::new(
            Some("name=a&name=b%2Cc&e="),
            Some("application/x-www-form-urlencoded"),
            &body,
        )
        .expect("form");
        assert_eq!(p.all("name"), ["a", "b,c", "x y"]);
        assert_eq!(p.get("name"), Some("x y"));
        assert_eq!(p.get("e"), Some(""));
        assert_eq!(p.get("nope"), None);
        let p = Params::new(Some("b=1"), Some("text/plain"), &body).expect("text");
        assert_eq!(p.get("b"), Some("1"), "only form bodies add parameters");
    }

    #[test]
    fn json_body_replaces_the_query() {
        let body = Bytes::from_static(br#"{"id":"x","n":5,"tags":["a"]}"#);
        let p = Params::new(Some("id=q&z=1"), Some("application/json"), &body).expect("json");
        assert_eq!(p.get("id"), Some("x"));
        assert_eq!(p.get("z"), None);
        assert_eq!(p.get("n"), Some("5"));
        assert_eq!(p.json("tags"), Some(&serde_json::json!(["a"])));
        let bad = Bytes::from_static(b"{oops");
        assert!(Params::new(None, Some("application/json"), &bad)
            .unwrap_err()
            .contains("invalid JSON"));
        let arr = Bytes::from_static(b"[1]");
        assert!(Params::new(None, Some("application/json"), &arr).is_err());
    }
}
