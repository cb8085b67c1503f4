//! First run as a newcomer meets it (docs/config.md, docs/api.md): a fresh home with no flag
//! serves the web console built into the binary while `/ping` stays closed; an application's
//! own file under `web/` wins; `-api-console false` turns the copy off; the `bkjs` wrapper
//! (packaging/bkjs, scripts/bkjs) sources the home's `etc/profile` before it execs the binary.

use crate::harness::*;
use std::path::Path;

const WRAPPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/bkjs");

#[test]
fn a_fresh_home_serves_the_built_in_console_and_keeps_ping_closed() {
    let t = Tree::start_plain("run-backend", &[]);
    t.ready_at("/api.html");
    assert!(!t.home.path().join("web/api.html").exists());
    let agent = agent();
    let page = agent.get(&t.url("/api.html")).call().expect("api.html");
    assert_eq!(page.content_type(), "text/html");
    let etag = page.header("etag").expect("an ETag").to_string();
    let body = page.into_string().expect("body");
    assert!(body.contains("<title>bkjs API console</title>"), "{body}");
    for path in ["/doc.html", "/js/bkjs.js", "/css/console.css"] {
        let r = t.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
    }
    // Revalidation: the same build answers 304 to its own ETag.
    let again = agent
        .get(&t.url("/api.html"))
        .set("if-none-match", &etag)
        .call()
        .expect("304 is not an error for ureq");
    assert_eq!(again.status(), 304);
    // SPEC §7: /ping is not open until -api-allow says so.
    let ping = t.get("/ping");
    assert!(
        (400..500).contains(&ping.status),
        "/ping must stay closed by default: {ping:?}"
    );
    assert_eq!(t.get("/nope.html").status, 404);
    // The application's own file of the same name wins over the built-in copy.
    let web = t.home.path().join("web");
    std::fs::create_dir_all(&web).expect("web dir");
    std::fs::write(web.join("api.html"), "<html>mine</html>").expect("write");
    assert_eq!(t.get("/api.html").body, "<html>mine</html>");
    assert_eq!(t.get("/doc.html").status, 200, "the rest still built in");
}

#[test]
fn api_console_false_turns_the_built_in_copy_off() {
    let t = Tree::start("run", &["-api-console", "false"]);
    t.ready(2);
    assert_eq!(t.get("/api.html").status, 404);
    assert_eq!(t.get("/js/bkjs.js").status, 404);
}

#[test]
fn the_wrapper_sources_the_home_profile_and_execs_the_binary() {
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    std::fs::create_dir_all(home.path().join("etc")).expect("etc");
    std::fs::write(
        home.path().join("etc/profile"),
        "# a shell script\nexport BKJS_API_CONSOLE=false\nexport BKJS_PROFILE_MARK=home-profile\n",
    )
    .expect("profile");
    let dir = home.path().to_path_buf();
    let t = Tree::spawn_in(home, free_port(), "run", &[], move |cmd| {
        let mut args = vec![WRAPPER.to_string()];
        args.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
        let (mut c, _) = command_of(Path::new("sh"), &dir, &args);
        c.env("BKJS_BIN", BIN);
        *cmd = c;
    });
    t.ready(2);
    // exec, not a child: the pid the wrapper started with is the bkjs top process now.
    let title = cmdline(t.pid);
    assert!(
        title.first().is_some_and(|t| t.starts_with("bkjs")),
        "{title:?}"
    );
    let environ = std::fs::read(format!("/proc/{}/environ", t.pid)).expect("environ");
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|v| v == b"BKJS_PROFILE_MARK=home-profile"),
        "etc/profile was not sourced"
    );
    // BKJS_API_CONSOLE=false from the profile reached the configuration.
    assert_eq!(t.get("/api.html").status, 404, "{}", t.log());
}
