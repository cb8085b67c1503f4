//! What an application registers with the API: routes (method + path pattern → handler), access
//! checks, pre hooks and post hooks, each matched by method and path regexp in registration order
//! (docs/api.md). The built-in endpoint groups are registered the same way, so `-api-disable GROUP`
//! and `web/doc.html` see one list.
//!
//! A request runs: access rules and authentication (`access`), then every matching access check,
//! then every matching pre hook, then the first matching route, then every matching post hook on
//! its JSON reply. A check or hook that returns an error ends the request with that error.

use super::error::ApiError;
use super::hooks::AccountDeleteHook;
use super::paths::literal_path;
use super::reply::Out;
use hyper::Method;
use regex::Regex;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed future returned by handlers and hooks.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A route handler: answers one request `R`.
pub type Handler<R> = Arc<dyn Fn(Arc<R>) -> BoxFuture<Result<Out, ApiError>> + Send + Sync>;
/// An access check or pre hook: `Ok(())` lets the request go on.
pub type Check<R> = Arc<dyn Fn(Arc<R>) -> BoxFuture<Result<(), ApiError>> + Send + Sync>;
/// A post hook: may rewrite the JSON reply of a successful request.
pub type PostHook<R> = Arc<dyn Fn(&R, &mut Value) + Send + Sync>;

/// What hooks are matched on: a request's method and path. The table is generic over the
/// request so that it does not depend on the request type, which refers back to the table
/// through the worker's state (`crate::api`).
pub trait Routed {
    fn method(&self) -> &Method;
    fn path(&self) -> &str;
}

/// What [`RouteTable::find`] found.
pub(crate) struct Found<R> {
    pub(crate) handler: Handler<R>,
    pub(crate) captures: Vec<(String, String)>,
    pub(crate) timer: Arc<bkjs_base::metrics::Timer>,
}

/// A path pattern: a regexp (`^/account/get$`, anchored by the caller) or a template with
/// `{name}` segments (`/test/{id}`, matching the whole path).
#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    /// A template whose `{name}`s are whole path segments, matched segment by segment.
    Segments(String, Vec<Segment>),
    Regex(Regex, Vec<String>),
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Capture(String),
}

impl Pattern {
    fn parse(pattern: &str) -> Result<Pattern, regex::Error> {
        if let Some(segments) = whole_segment_template(pattern) {
            return Ok(Pattern::Segments(pattern.to_string(), segments));
        }
        if pattern.contains('{') {
            let mut rx = String::from("^");
            let mut names = Vec::new();
            let mut rest = pattern;
            while let Some(open) = rest.find('{') {
                rx.push_str(&regex::escape(&rest[..open]));
                let Some(close) = rest[open..].find('}') else {
                    return Err(regex::Error::Syntax(format!("unclosed {{ in {pattern}")));
                };
                let name = &rest[open + 1..open + close];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(regex::Error::Syntax(format!(
                        "bad parameter name {name:?} in {pattern}"
                    )));
                }
                rx.push_str(&format!("(?P<{name}>[^/]+)"));
                names.push(name.to_string());
                rest = &rest[open + close + 1..];
            }
            rx.push_str(&regex::escape(rest));
            rx.push('$');
            return Ok(Pattern::Regex(Regex::new(&rx)?, names));
        }
        let regexp = pattern.starts_with('^')
            || pattern.ends_with('$')
            || pattern.chars().any(|c| "()[]|*+?\\.".contains(c));
        if !regexp {
            return Ok(Pattern::Exact(pattern.to_string()));
        }
        match literal_path(pattern) {
            Some(p) => Ok(Pattern::Exact(p)),
            None => Ok(Pattern::Regex(Regex::new(pattern)?, Vec::new())),
        }
    }

    /// `None` when `path` does not match; the `{name}` captures when it does.
    fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        match self {
            Pattern::Exact(p) => (p == path).then(Vec::new),
            Pattern::Segments(_, segments) => {
                let mut caps = Vec::new();
                let mut parts = path.split('/');
                for seg in segments {
                    let part = parts.next()?;
                    match seg {
                        Segment::Literal(l) if l == part => {}
                        Segment::Capture(n) if !part.is_empty() => {
                            caps.push((n.clone(), percent_decode(part)));
                        }
                        _ => return None,
                    }
                }
                parts.next().is_none().then_some(caps)
            }
            Pattern::Regex(rx, names) if names.is_empty() => rx.is_match(path).then(Vec::new),
            Pattern::Regex(rx, names) => {
                let caps = rx.captures(path)?;
                Some(
                    names
                        .iter()
                        .filter_map(|n| {
                            let v = caps.name(n)?.as_str();
                            let v = percent_decode(v);
                            Some((n.clone(), v))
                        })
                        .collect(),
                )
            }
        }
    }

    fn source(&self) -> &str {
        match self {
            Pattern::Exact(p) | Pattern::Segments(p, _) => p,
            Pattern::Regex(rx, _) => rx.as_str(),
        }
    }
}

/// `/a/{x}/b`: every `{name}` is a whole segment (then no regexp is needed); `None` otherwise.
fn whole_segment_template(pattern: &str) -> Option<Vec<Segment>> {
    if !pattern.starts_with('/') || !pattern.contains('{') {
        return None;
    }
    pattern
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|x| x.strip_suffix('}')) {
                Some(name)
                    if !name.is_empty()
                        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    Some(Segment::Capture(name.to_string()))
                }
                _ if seg.contains(['{', '}']) => None,
                _ => Some(Segment::Literal(seg.to_string())),
            },
        )
        .collect()
}

fn percent_decode(s: &str) -> String {
    if !s.contains(['%', '+']) {
        return s.to_string();
    }
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A method filter: `None` or `"*"` matches any.
fn method_of(m: &str) -> Result<Option<Method>, String> {
    if m.is_empty() || m == "*" {
        return Ok(None);
    }
    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .map(Some)
        .map_err(|_| format!("bad method {m:?}"))
}

struct Route<R> {
    method: Option<Method>,
    pattern: Pattern,
    /// `urls.PATTERN.response`, made on first use (bounded: one per route, not per path).
    timer: Arc<std::sync::OnceLock<Arc<bkjs_base::metrics::Timer>>>,
    /// The endpoint group (`account`, `system`, ...) `-api-disable` refers to.
    group: String,
    /// One line for `web/doc.html` and `bkjs help`.
    doc: String,
    handler: Handler<R>,
}

// By hand: a derive would require `R: Clone`, and a request is not.
impl<R> Clone for Route<R> {
    fn clone(&self) -> Self {
        Route {
            method: self.method.clone(),
            pattern: self.pattern.clone(),
            timer: self.timer.clone(),
            group: self.group.clone(),
            doc: self.doc.clone(),
            handler: self.handler.clone(),
        }
    }
}

#[derive(Clone)]
struct Hook<F> {
    method: Option<Method>,
    rx: Regex,
    f: F,
}

impl<F> Hook<F> {
    fn applies(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.rx.is_match(path)
    }
}

/// Every route and hook of an application, built-in groups included, for requests of type `R`
/// (`crate::Routes` is the table of `crate::Req`).
pub struct RouteTable<R> {
    routes: Vec<Route<R>>,
    /// Exact paths to the routes registered for them, in order, so most requests skip the regexps.
    exact: HashMap<String, Vec<usize>>,
    /// Routes whose pattern is a regexp, in registration order.
    patterns: Vec<usize>,
    access: Vec<Hook<Check<R>>>,
    pre: Vec<Hook<Check<R>>>,
    post: Vec<Hook<PostHook<R>>>,
    /// Run by `/account/del` before it deletes the account's rows keyed by id.
    account_delete: Vec<AccountDeleteHook>,
}

// By hand: derives would require `R: Default` and `R: Clone`.
impl<R> Default for RouteTable<R> {
    fn default() -> Self {
        RouteTable {
            routes: Vec::new(),
            exact: HashMap::new(),
            patterns: Vec::new(),
            access: Vec::new(),
            pre: Vec::new(),
            post: Vec::new(),
            account_delete: Vec::new(),
        }
    }
}

impl<R> Clone for RouteTable<R> {
    fn clone(&self) -> Self {
        RouteTable {
            routes: self.routes.clone(),
            exact: self.exact.clone(),
            patterns: self.patterns.clone(),
            access: self.access.clone(),
            pre: self.pre.clone(),
            post: self.post.clone(),
            account_delete: self.account_delete.clone(),
        }
    }
}

impl<R> std::fmt::Debug for RouteTable<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("routes", &self.routes.len())
            .field("access", &self.access.len())
            .field("pre", &self.pre.len())
            .field("post", &self.post.len())
            .field("account_delete", &self.account_delete.len())
            .finish()
    }
}

/// A registration that cannot work: a bad method or pattern. The application's fault, reported
/// at start.
#[derive(Debug, thiserror::Error)]
#[error("route {method} {pattern}: {reason}")]
pub struct RouteError {
    method: String,
    pattern: String,
    reason: String,
}

/// The endpoint group of a path: its first segment (`/account/get` → `account`).
pub(crate) fn group_of(path: &str) -> &str {
    path.trim_start_matches(['^', '/'])
        .split(['/', '$', '{', '('])
        .next()
        .unwrap_or("")
}

fn boxed_handler<R, F, Fut>(f: F) -> Handler<R>
where
    F: Fn(Arc<R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Out, ApiError>> + Send + 'static,
{
    Arc::new(move |r| Box::pin(f(r)))
}

fn boxed_check<R, F, Fut>(f: F) -> Check<R>
where
    F: Fn(Arc<R>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
{
    Arc::new(move |r| Box::pin(f(r)))
}

impl<R: Routed + 'static> RouteTable<R> {
    pub fn new() -> RouteTable<R> {
        RouteTable::default()
    }

    /// Adds a route: `method` (`GET`, `POST`, ... or `*`), `pattern` (an exact path, a regexp, or
    /// a template with `{name}` segments) and an async handler.
    pub fn add<F, Fut>(
        &mut self,
        method: &str,
        pattern: &str,
        doc: &str,
        f: F,
    ) -> Result<(), RouteError>
    where
        F: Fn(Arc<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Out, ApiError>> + Send + 'static,
    {
        self.add_handler(method, pattern, doc, boxed_handler(f))
    }

    pub fn add_handler(
        &mut self,
        method: &str,
        pattern: &str,
        doc: &str,
        handler: Handler<R>,
    ) -> Result<(), RouteError> {
        let fail = |reason: String| RouteError {
            method: method.to_string(),
            pattern: pattern.to_string(),
            reason,
        };
        let m = method_of(method).map_err(fail)?;
        let p = Pattern::parse(pattern).map_err(|e| fail(e.to_string()))?;
        let i = self.routes.len();
        match &p {
            Pattern::Exact(path) => self.exact.entry(path.clone()).or_default().push(i),
            Pattern::Regex(..) | Pattern::Segments(..) => self.patterns.push(i),
        }
        self.routes.push(Route {
            timer: Default::default(),
            method: m,
            group: group_of(pattern).to_string(),
            pattern: p,
            doc: doc.to_string(),
            handler,
        });
        Ok(())
    }

    fn hook<F>(method: &str, pattern: &str, f: F) -> Result<Hook<F>, RouteError> {
        let fail = |reason: String| RouteError {
            method: method.to_string(),
            pattern: pattern.to_string(),
            reason,
        };
        Ok(Hook {
            method: method_of(method).map_err(fail)?,
            rx: Regex::new(pattern).map_err(|e| fail(e.to_string()))?,
            f,
        })
    }

    /// An access check, run after authentication for requests whose method and path match.
    pub fn access<F, Fut>(&mut self, method: &str, pattern: &str, f: F) -> Result<(), RouteError>
    where
        F: Fn(Arc<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
    {
        let h = Self::hook(method, pattern, boxed_check(f))?;
        self.access.push(h);
        Ok(())
    }

    /// A pre hook, run after the access checks.
    pub fn pre<F, Fut>(&mut self, method: &str, pattern: &str, f: F) -> Result<(), RouteError>
    where
        F: Fn(Arc<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ApiError>> + Send + 'static,
    {
        let h = Self::hook(method, pattern, boxed_check(f))?;
        self.pre.push(h);
        Ok(())
    }

    /// A post hook: rewrites the JSON reply of a successful request.
    pub fn post<F>(&mut self, method: &str, pattern: &str, f: F) -> Result<(), RouteError>
    where
        F: Fn(&R, &mut Value) + Send + Sync + 'static,
    {
        let h = Self::hook(method, pattern, Arc::new(f) as PostHook<R>)?;
        self.post.push(h);
        Ok(())
    }

    /// Moves every registration of `other` after this one's.
    pub fn extend(&mut self, other: RouteTable<R>) {
        let base = self.routes.len();
        for (path, idx) in other.exact {
            self.exact
                .entry(path)
                .or_default()
                .extend(idx.into_iter().map(|i| i + base));
        }
        self.patterns
            .extend(other.patterns.into_iter().map(|i| i + base));
        self.routes.extend(other.routes);
        self.access.extend(other.access);
        self.pre.extend(other.pre);
        self.post.extend(other.post);
        self.account_delete.extend(other.account_delete);
    }

    /// Adds a hook run when an account is deleted, for rows of the registering group that need
    /// more than a delete by id.
    pub fn on_account_delete(&mut self, hook: AccountDeleteHook) {
        self.account_delete.push(hook);
    }

    /// The account-deletion hooks, in registration order.
    pub fn account_delete_hooks(&self) -> &[AccountDeleteHook] {
        &self.account_delete
    }

    /// Drops the routes of disabled groups (`-api-disable`).
    pub(crate) fn disable(&mut self, groups: &[String]) {
        if groups.is_empty() {
            return;
        }
        let keep: Vec<bool> = self
            .routes
            .iter()
            .map(|r| !groups.contains(&r.group))
            .collect();
        let mut renumber = Vec::with_capacity(keep.len());
        let mut n = 0;
        for k in &keep {
            renumber.push(n);
            if *k {
                n += 1;
            }
        }
        let old = std::mem::take(&mut self.routes);
        self.routes = old
            .into_iter()
            .zip(&keep)
            .filter_map(|(r, k)| k.then_some(r))
            .collect();
        let map = |v: &mut Vec<usize>| {
            v.retain(|i| keep[*i]);
            for i in v.iter_mut() {
                *i = renumber[*i];
            }
        };
        for v in self.exact.values_mut() {
            map(v);
        }
        self.exact.retain(|_, v| !v.is_empty());
        map(&mut self.patterns);
    }

    /// The first route for `method` and `path`: its handler, captures and per-route timer.
    /// `Err(true)` when the path exists for another method (405), `Err(false)` when it does not.
    pub(crate) fn find(&self, method: &Method, path: &str) -> Result<Found<R>, bool> {
        let (i, captures) = self.find_index(method, path)?;
        let r = &self.routes[i];
        let timer = r
            .timer
            .get_or_init(|| {
                bkjs_base::metrics::Registry::global()
                    .timer(&format!("urls.{}.response", r.pattern.source()))
            })
            .clone();
        Ok(Found {
            handler: r.handler.clone(),
            captures,
            timer,
        })
    }

    fn find_index(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<(usize, Vec<(String, String)>), bool> {
        let mut other_method = false;
        let accepts = |r: &Route<R>| match &r.method {
            None => true,
            Some(m) => m == method || (method == Method::HEAD && m == Method::GET),
        };
        if let Some(idx) = self.exact.get(path) {
            for &i in idx {
                let r = &self.routes[i];
                if accepts(r) {
                    return Ok((i, Vec::new()));
                }
                other_method = true;
            }
        }
        for &i in &self.patterns {
            let r = &self.routes[i];
            if let Some(caps) = r.pattern.matches(path) {
                if accepts(r) {
                    return Ok((i, caps));
                }
                other_method = true;
            }
        }
        Err(other_method)
    }

    /// Runs the access checks, then the pre hooks, that match this request.
    pub(crate) async fn before(&self, req: &Arc<R>) -> Result<(), ApiError> {
        for h in self.access.iter().chain(self.pre.iter()) {
            if h.applies(req.method(), req.path()) {
                (h.f)(req.clone()).await?;
            }
        }
        Ok(())
    }

    /// Runs the post hooks that match this request on its JSON reply.
    pub(crate) fn after(&self, req: &R, reply: &mut Value) {
        for h in &self.post {
            if h.applies(req.method(), req.path()) {
                (h.f)(req, reply);
            }
        }
    }

    /// `(method, pattern, group, doc)` of every route, for documentation.
    pub fn describe(&self) -> Vec<(String, String, String, String)> {
        self.routes
            .iter()
            .map(|r| {
                (
                    r.method
                        .as_ref()
                        .map(|m| m.to_string())
                        .unwrap_or_else(|| "*".into()),
                    r.pattern.source().to_string(),
                    r.group.clone(),
                    r.doc.clone(),
                )
            })
            .collect()
    }

    /// True when some pre hook, access check or post hook exists (the fast path skips them).
    pub(crate) fn has_hooks(&self) -> bool {
        !(self.access.is_empty() && self.pre.is_empty() && self.post.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Req, Routes};

    #[test]
    fn patterns_match_exact_regexp_and_templates() {
        let p = Pattern::parse("/account/get").expect("exact");
        assert!(matches!(p, Pattern::Exact(_)));
        assert_eq!(p.matches("/account/get"), Some(vec![]));
        assert_eq!(p.matches("/account/get/x"), None);
        let p = Pattern::parse("^/account/get$").expect("literal regexp");
        assert!(matches!(p, Pattern::Exact(_)));
        let p = Pattern::parse("^/system/").expect("prefix");
        assert!(p.matches("/system/cache/get").is_some());
        assert!(p.matches("/x/system/").is_none());
        let p = Pattern::parse("/test/{id}/icon/{type}").expect("template");
        assert_eq!(
            p.matches("/test/a%20b/icon/9"),
            Some(vec![
                ("id".into(), "a b".into()),
                ("type".into(), "9".into())
            ])
        );
        assert_eq!(
            p.matches("/test/a/b/icon/9"),
            None,
            "a segment has no slash"
        );
        assert_eq!(p.matches("/test//icon/9"), None, "a segment is not empty");
        assert!(matches!(p, Pattern::Segments(..)), "no regexp needed");
        assert_eq!(p.source(), "/test/{id}/icon/{type}");
        assert_eq!(p.matches("/test/a/icon/9/more"), None);
        assert_eq!(p.matches("/test/a/icon"), None);
        let p = Pattern::parse("/img/{id}.png").expect("template within a segment");
        assert!(matches!(p, Pattern::Regex(..)));
        assert_eq!(
            p.matches("/img/x.png"),
            Some(vec![("id".into(), "x".into())])
        );
        assert!(Pattern::parse("/x/{").is_err());
        assert!(Pattern::parse("/x/{a-b}").is_err());
        assert!(Pattern::parse("^/x(").is_err());
    }

    #[test]
    fn groups_come_from_the_first_segment() {
        assert_eq!(group_of("/account/get"), "account");
        assert_eq!(group_of("^/system/"), "system");
        assert_eq!(group_of("/ping"), "ping");
        assert_eq!(group_of("^/data/(get|put)/"), "data");
        assert_eq!(group_of("/test/{id}"), "test");
    }

    async fn answer(_r: Arc<Req>) -> Result<Out, ApiError> {
        Ok(Out::Json(Value::Null))
    }

    #[test]
    fn find_prefers_registration_order_and_reports_wrong_methods() {
        let mut r = Routes::new();
        r.add("GET", "/a/b", "", answer).expect("add");
        r.add("POST", "/a/{x}", "", answer).expect("add");
        r.add("*", "^/c/", "", answer).expect("add");
        assert!(r.find(&Method::GET, "/a/b").is_ok());
        assert!(
            r.find(&Method::HEAD, "/a/b").is_ok(),
            "HEAD is served by GET"
        );
        let Ok(found) = r.find(&Method::POST, "/a/b") else {
            panic!("the template route matches")
        };
        assert_eq!(found.captures, vec![("x".into(), "b".into())]);
        assert_eq!(r.find(&Method::PUT, "/a/b").err(), Some(true));
        assert_eq!(r.find(&Method::GET, "/nope").err(), Some(false));
        assert!(r.find(&Method::DELETE, "/c/d").is_ok());
        r.disable(&["a".to_string()]);
        assert_eq!(r.find(&Method::GET, "/a/b").err(), Some(false));
        assert!(r.find(&Method::GET, "/c/d").is_ok(), "other groups stay");
        assert!(r.add("GET", "/x/{", "", answer).is_err());
        assert!(r.add("FOO BAR", "/x", "", answer).is_err());
    }

    #[test]
    fn extend_keeps_both_sets_of_routes() {
        let mut a = Routes::new();
        a.add("GET", "/a", "", answer).expect("add");
        let mut b = Routes::new();
        b.add("GET", "/b", "", answer).expect("add");
        b.add("GET", "^/b/", "", answer).expect("add");
        a.extend(b);
        assert!(a.find(&Method::GET, "/a").is_ok());
        assert!(a.find(&Method::GET, "/b").is_ok());
        assert!(a.find(&Method::GET, "/b/x").is_ok());
        assert_eq!(a.describe().len(), 3);
    }
}
