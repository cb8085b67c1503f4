//! Request parameters from the query string, a form body or a JSON body (docs/api.md: a JSON body
//! replaces the query), in order of appearance.

use bytes::Bytes;

/// Decoded `name=value` pairs of one request.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
    /// The JSON body's fields with their types, when the body was a JSON object.
    json: Option<serde_json::Map<String, serde_json::Value>>,
    /// Files of a multipart body.
    files: Vec<Upload>,
}

/// A file part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The form field's name.
    pub name: String,
    pub file_name: Option<String>,
    pub content_type: Option<String>,
    pub data: Bytes,
}

impl Params {
    /// [`Params::new`], plus `multipart/form-data` bodies: text fields become parameters and
    /// file fields [`Upload`]s.
    pub async fn parse(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &Bytes,
    ) -> Result<Params, String> {
        let Some(ct) = content_type.filter(|c| c.starts_with("multipart/form-data")) else {
            return Params::new(query, content_type, body);
        };
        let boundary =
            multer::parse_boundary(ct).map_err(|e| format!("bad multipart body: {e}"))?;
        let boundary = exact_boundary(body, &boundary).unwrap_or(boundary);
        let mut p = Params::new(query, None, body)?;
        let chunk = body.clone();
        let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(chunk) });
        let mut parts = multer::Multipart::new(stream, boundary);
        loop {
            let field = match parts.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(format!("bad multipart body: {e}")),
            };
            let name = field.name().unwrap_or("").to_string();
            let file_name = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(|m| m.to_string());
            let data = field
                .bytes()
                .await
                .map_err(|e| format!("bad multipart body: {e}"))?;
            if file_name.is_some() {
                p.files.push(Upload {
                    name,
                    file_name,
                    content_type,
                    data,
                });
            } else {
                p.pairs
                    .push((name, String::from_utf8_lossy(&data).into_owned()));
            }
        }
        Ok(p)
    }

    /// The file parts of a multipart body.
    pub fn files(&self) -> &[Upload] {
        &self.files
    }

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
                Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
                    return Err(format!(
                        "the JSON body is nested deeper than -api-max-json-depth ({JSON_PARSER_DEPTH})"
                    ))
                }
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
                files: Vec::new(),
            });
        }
        let mut pairs: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if content_type.is_some_and(|c| c.starts_with("application/x-www-form-urlencoded")) {
            pairs.extend(form_urlencoded::parse(body).into_owned());
        }
        Ok(Params {
            pairs,
            json: None,
            files: Vec::new(),
        })
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

/// The boundary as the body spells it. The router hands the Content-Type over lower-cased,
/// while a boundary is case-sensitive (browsers send `----WebKitFormBoundaryAbC...`): the body's
/// first delimiter line (`--BOUNDARY`, after an optional preamble) gives back its exact case.
pub(crate) fn exact_boundary(body: &[u8], lower: &str) -> Option<String> {
    let want = format!("--{lower}");
    let n = want.len();
    (0..body.len().saturating_sub(n - 1))
        .filter(|&i| i == 0 || body[i - 1] == b'\n')
        .map(|i| &body[i..i + n])
        .find(|line| line.eq_ignore_ascii_case(want.as_bytes()))
        .and_then(|line| std::str::from_utf8(&line[2..]).ok())
        .map(str::to_string)
}

/// The deepest nesting of arrays and objects serde_json parses (its recursion limit): the most
/// `-api-max-json-depth` may be.
pub const JSON_PARSER_DEPTH: usize = 127;

/// True when the arrays and objects of the JSON text `body` nest deeper than `max` (brackets
/// inside strings do not count). A quick scan before parsing; malformed text is left to the parser.
pub fn json_deeper_than(body: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(n: usize) -> String {
        format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1))
    }

    #[test]
    fn json_depth_counts_arrays_and_objects_outside_strings() {
        assert!(!json_deeper_than(nested(4).as_bytes(), 4));
        assert!(json_deeper_than(nested(5).as_bytes(), 4));
        assert!(!json_deeper_than(br#"{"a":"[[[[[[{{{{\"[[[["}"#, 1));
        assert!(
            json_deeper_than(br#"{"a\\":[{}]}"#, 2),
            "an escaped backslash ends"
        );
        assert!(!json_deeper_than(br#"{"a":[1],"b":[2],"c":{"d":3}}"#, 2));
        // The parser's own limit is the largest value the parameter takes.
        assert!(serde_json::from_str::<serde_json::Value>(&nested(JSON_PARSER_DEPTH)).is_ok());
        let Err(deeper) = Params::new(
            None,
            Some("application/json"),
            &Bytes::from(nested(JSON_PARSER_DEPTH + 1)),
        ) else {
            panic!("a JSON body deeper than the parser's limit was accepted");
        };
        assert!(deeper.contains("-api-max-json-depth"), "{deeper}");
    }

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

    #[tokio::test]
    async fn multipart_fields_and_files() {
        let body = Bytes::from_static(
            b"--XX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
--XX\r\nContent-Disposition: form-data; name=\"icon\"; filename=\"i.png\"\r\n\
Content-Type: image/png\r\n\r\nPNGDATA\r\n--XX--\r\n",
        );
        let p = Params::parse(Some("q=2"), Some("multipart/form-data; boundary=XX"), &body)
            .await
            .expect("multipart");
        assert_eq!(p.get("a"), Some("1"));
        assert_eq!(p.get("q"), Some("2"));
        assert_eq!(p.files().len(), 1);
        assert_eq!(p.files()[0].name, "icon");
        assert_eq!(p.files()[0].file_name.as_deref(), Some("i.png"));
        assert_eq!(&p.files()[0].data[..], b"PNGDATA");
        // The router lower-cases the content type; the boundary's case comes from the body.
        let body = Bytes::from_static(
            b"preamble\r\n--AbC\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--AbC--\r\n",
        );
        let p = Params::parse(None, Some("multipart/form-data; boundary=abc"), &body)
            .await
            .expect("mixed-case boundary");
        assert_eq!(p.get("a"), Some("1"));
        let bad = Bytes::from_static(b"--XX\r\nnonsense");
        assert!(
            Params::parse(None, Some("multipart/form-data; boundary=XX"), &bad)
                .await
                .is_err()
        );
    }

    use proptest::prelude::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Any query and body under any of the parsed content types: parameters or an error,
        /// never a panic.
        #[test]
        fn params_survive_any_input(
            query in proptest::option::of("\\PC{0,100}"),
            body in proptest::collection::vec(any::<u8>(), 0..300),
            ct in 0usize..4,
        ) {
            let ct = [
                None,
                Some("application/json"),
                Some("application/x-www-form-urlencoded"),
                Some("multipart/form-data; boundary=XX"),
            ][ct];
            let body = Bytes::from(body);
            let _ = block_on(Params::parse(query.as_deref(), ct, &body));
        }

        /// Multipart bodies made of real parts with random names and contents parse back.
        #[test]
        fn multipart_round_trips(
            fields in proptest::collection::vec(("[a-z]{1,8}", "[a-zA-Z0-9 ]{0,40}"), 0..6),
            junk in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut body = Vec::new();
            for (k, v) in &fields {
                body.extend_from_slice(format!(
                    "--XX\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
                ).as_bytes());
            }
            body.extend_from_slice(b"--XX--\r\n");
            let p = block_on(Params::parse(None, Some("multipart/form-data; boundary=XX"), &Bytes::from(body.clone())))
                .expect("multipart");
            let got: Vec<(String, String)> = p.pairs().to_vec();
            prop_assert_eq!(got, fields.clone());
            // The same body cut or followed by junk: an answer, never a panic.
            body.truncate(body.len() / 2);
            body.extend_from_slice(&junk);
            let _ = block_on(Params::parse(None, Some("multipart/form-data; boundary=XX"), &Bytes::from(body)));
        }
    }
}
