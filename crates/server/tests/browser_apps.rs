//! Apps on origins of their own, against a real burrowd, from an attacker's side: each test
//! tries to cross one boundary (origin, login, code, credential, app, user) and must be
//! refused.

mod common;

use burrow_proto::app_origin::{Launch, LaunchRequest};
use burrow_proto::signal::{
    ApiError, ErrorCode, PORT_RESTRICTION_VERSION, ServerToAgent, SessionGrant, SessionRequest,
};
use burrow_server::api::Me;
use common::{Env, Ws, assert_refused, browser, recv, send, set_cookie, ws_on_host};
use reqwest::{Method, Response, StatusCode};

const SHELL_HTML: &str = include_str!("../../../web/shell.html");

/// alice's workspace `box`, its agent online with ports 8080 and 8081.
struct World {
    env: Env,
    alice: String,
    agent: Ws,
}

impl World {
    /// alice's launch of her app `port` of `box`, with her token.
    async fn launch(&self, port: u16) -> Launch {
        launch(
            &self.env,
            As::Token(&self.alice),
            "box",
            port,
            &LaunchRequest::default(),
        )
        .await
    }
}

fn deep_link(path: &str, embedded: bool) -> LaunchRequest {
    LaunchRequest {
        path: Some(path.to_owned()),
        embedded,
    }
}

/// `GET path` on the dashboard with a `Cookie` header.
async fn get_with_cookie(env: &Env, path: &str, cookie: &str) -> Response {
    browser()
        .get(format!("{}{path}", env.base))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get")
}

async fn world() -> World {
    world_with(|_| {}).await
}

async fn world_with(configure: impl FnOnce(&mut burrow_server::ServerConfig)) -> World {
    let env = Env::start_with_apps(configure).await;
    let alice = env.user("alice").await;
    let agent_token = env.workspace("box", "alice").await;
    let agent = env.agent(&agent_token, &[8080, 8081]).await;
    World { env, alice, agent }
}

async fn api_error(r: Response) -> ApiError {
    r.json().await.expect("ApiError body")
}

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `POST /api/v1/login` with `origin` (if any).
async fn login_request(env: &Env, token: &str, origin: Option<&str>) -> Response {
    let mut req = browser()
        .post(format!("{}/api/v1/login", env.base))
        .json(&serde_json::json!({ "token": token }));
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    req.send().await.expect("login")
}

/// Logs in from the dashboard's page; returns the `Cookie` header value.
async fn login(env: &Env, token: &str) -> String {
    let r = login_request(env, token, Some(&env.dashboard())).await;
    assert_eq!(r.status(), 200);
    set_cookie(&r, "__Host-burrow_session")
        .expect("login cookie")
        .0
}

/// How a launch is authenticated.
enum As<'a> {
    Token(&'a str),
    /// The login cookie, from a page of this origin (if any).
    Browser(&'a str, Option<&'a str>),
}

async fn launch_request(
    env: &Env,
    who: As<'_>,
    workspace: &str,
    port: u16,
    body: &LaunchRequest,
) -> Response {
    let mut req = browser()
        .post(format!(
            "{}{}",
            env.base,
            burrow_proto::app_origin::launch_path(workspace, port)
        ))
        .json(body);
    req = match who {
        As::Token(token) => req.bearer_auth(token),
        As::Browser(cookie, origin) => {
            let req = req.header("cookie", cookie);
            match origin {
                Some(o) => req.header("origin", o),
                None => req,
            }
        }
    };
    req.send().await.expect("launch")
}

async fn launch(
    env: &Env,
    who: As<'_>,
    workspace: &str,
    port: u16,
    body: &LaunchRequest,
) -> Launch {
    let r = launch_request(env, who, workspace, port, body).await;
    assert_eq!(r.status(), 200, "launch should succeed");
    r.json().await.expect("launch json")
}

/// Host and path of a URL this server handed out.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    let at = rest.find('/').expect("a path");
    (rest[..at].to_owned(), rest[at..].to_owned())
}

/// Opens a launch URL, as the browser does; on `host` instead of the URL's when given.
async fn open_launch(env: &Env, launch: &Launch, host: Option<&str>) -> Response {
    let (url_host, path) = split_url(&launch.url);
    env.on_host(Method::GET, host.unwrap_or(&url_host), &path)
        .header("sec-fetch-dest", "document")
        .send()
        .await
        .expect("auth")
}

/// A credential cookie (`name=value`) for alice's app `port` of `box`, launched with her
/// token.
async fn credential(w: &World, port: u16) -> String {
    let l = w.launch(port).await;
    let r = open_launch(&w.env, &l, None).await;
    assert_eq!(r.status(), 303);
    set_cookie(&r, "__Host-burrow_app").expect("app cookie").0
}

/// `POST /.burrow/session` on `host`, with a credential and an origin if given.
async fn app_session(
    env: &Env,
    host: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Response {
    let mut req = env
        .on_host(Method::POST, host, "/.burrow/session")
        .json(&SessionRequest::default());
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("session")
}

/// An app page's navigation to `path` on `host`.
async fn navigate(
    env: &Env,
    host: &str,
    path: &str,
    dest: Option<&str>,
    cookie: Option<&str>,
) -> Response {
    let mut req = env.on_host(Method::GET, host, path);
    if let Some(d) = dest {
        req = req.header("sec-fetch-dest", d);
    }
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.expect("navigation")
}

// Logins.

#[tokio::test]
async fn login_without_an_origin_is_refused_and_audited() {
    let w = world().await;
    let r = login_request(&w.env, &w.alice, None).await;
    assert_eq!(r.status(), 403);
    assert!(set_cookie(&r, "__Host-burrow_session").is_none());
    assert_eq!(api_error(r).await.code, ErrorCode::Forbidden);
    w.env
        .wait_audit(|r| r.outcome == "refused: no origin")
        .await;
}

#[tokio::test]
async fn login_from_another_origin_is_refused_even_an_apps() {
    let w = world().await;
    for origin in [
        "http://evil.example".to_owned(),
        "null".to_owned(),
        w.env.app_origin(8080, "box", "alice"),
        format!("{}0", w.env.dashboard()),
    ] {
        let r = login_request(&w.env, &w.alice, Some(&origin)).await;
        assert_eq!(r.status(), 403, "{origin}");
        assert!(set_cookie(&r, "__Host-burrow_session").is_none());
        let e = api_error(r).await;
        assert!(e.message.contains(&w.env.dashboard()), "{e}");
    }
    w.env
        .wait_audit(|r| r.outcome == "refused: foreign origin")
        .await;
}

#[tokio::test]
async fn login_with_a_bad_token_is_401_and_audited() {
    let w = world().await;
    for token in ["bu_not-a-token", ""] {
        let r = login_request(&w.env, token, Some(&w.env.dashboard())).await;
        assert_eq!(r.status(), 401);
        assert!(set_cookie(&r, "__Host-burrow_session").is_none());
    }
    w.env
        .wait_audit(|r| r.outcome == "refused: bad login")
        .await;
}

#[tokio::test]
async fn login_sets_an_http_only_strict_host_cookie_that_reads_the_api() {
    let w = world().await;
    let r = login_request(&w.env, &w.alice, Some(&w.env.dashboard())).await;
    assert_eq!(r.status(), 200);
    let (cookie, whole) = set_cookie(&r, "__Host-burrow_session").expect("cookie");
    assert!(cookie.starts_with("__Host-burrow_session=bw_"), "{cookie}");
    assert_eq!(
        whole,
        format!("{cookie}; Path=/; Secure; HttpOnly; SameSite=Strict")
    );
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body, serde_json::json!({ "user": "alice" }));
    w.env.wait_audit(|r| r.outcome == "logged in").await;

    let me: Me = get_with_cookie(&w.env, "/api/v1/me", &cookie)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        me,
        Me {
            user: "alice".into(),
            apps_url: Some(format!(
                "http://*.localhost:{}",
                w.env.server.http_addr.port()
            )),
        }
    );
    let r = get_with_cookie(&w.env, "/api/v1/workspaces", &cookie).await;
    assert_eq!(r.status(), 200);
    let r = get_with_cookie(&w.env, "/api/v1/audit", &cookie).await;
    assert_eq!(r.status(), 200);
    let r = get_with_cookie(&w.env, "/api/v1/me", "__Host-burrow_session=bw_forged").await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_login_cookie_cannot_grant_sessions_those_stay_bearer_only() {
    let w = world().await;
    let cookie = login(&w.env, &w.alice).await;
    let r = browser()
        .post(format!("{}/api/v1/workspaces/box/sessions", w.env.base))
        .header("cookie", &cookie)
        .header("origin", w.env.dashboard())
        .send()
        .await
        .expect("session");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn me_says_apps_are_off_without_an_apps_url() {
    let env = Env::start().await;
    let token = env.user("alice").await;
    let body: serde_json::Value = browser()
        .get(format!("{}/api/v1/me", env.base))
        .bearer_auth(&token)
        .send()
        .await
        .expect("me")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body,
        serde_json::json!({ "user": "alice", "apps_url": null })
    );
}

// Launches.

#[tokio::test]
async fn launch_with_the_cookie_from_a_foreign_origin_or_none_is_refused() {
    let w = world().await;
    let cookie = login(&w.env, &w.alice).await;
    let app = w.env.app_origin(8080, "box", "alice");
    for origin in [None, Some("http://evil.example"), Some(app.as_str())] {
        let r = launch_request(
            &w.env,
            As::Browser(&cookie, origin),
            "box",
            8080,
            &LaunchRequest::default(),
        )
        .await;
        assert_eq!(r.status(), 403, "{origin:?}");
        assert_eq!(api_error(r).await.code, ErrorCode::Forbidden);
    }
    let row = w
        .env
        .wait_audit(|r| r.outcome == "refused: foreign origin")
        .await;
    assert_eq!(row.user.as_deref(), Some("alice"));
    assert!(
        w.env
            .audit()
            .await
            .iter()
            .all(|r| r.outcome != "app launched")
    );
    // From the dashboard's own page it works.
    launch(
        &w.env,
        As::Browser(&cookie, Some(&w.env.dashboard())),
        "box",
        8080,
        &LaunchRequest::default(),
    )
    .await;
}

#[tokio::test]
async fn launch_of_another_users_workspace_answers_exactly_like_a_missing_one() {
    let w = world().await;
    let mallory = w.env.user("mallory").await;
    let cookie = login(&w.env, &mallory).await;
    let dashboard = w.env.dashboard();
    let mut answers = Vec::new();
    // A port alice's agent serves and one it does not: neither tells mallory anything.
    for (workspace, port) in [("box", 8080), ("box", 9999), ("nowhere", 8080)] {
        for who in [As::Token(&mallory), As::Browser(&cookie, Some(&dashboard))] {
            let r = launch_request(&w.env, who, workspace, port, &LaunchRequest::default()).await;
            let status = r.status();
            let e = api_error(r).await;
            answers.push((status, e.code, e.message.replace(workspace, "NAME")));
        }
    }
    assert!(
        answers.iter().all(|a| *a
            == (
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                r#"no workspace named "NAME""#.to_owned()
            )),
        "{answers:#?}"
    );
    let row = w
        .env
        .wait_audit(|r| r.outcome == "refused: forbidden")
        .await;
    assert_eq!(
        (row.user.as_deref(), row.workspace.as_deref()),
        (Some("mallory"), Some("box"))
    );
}

#[tokio::test]
async fn launch_answers_a_one_time_url_on_the_apps_own_origin_and_is_audited() {
    let w = world().await;
    let l = w.launch(8080).await;
    let origin = w.env.app_origin(8080, "box", "alice");
    assert_eq!(l.origin, origin);
    let code = l
        .url
        .strip_prefix(&format!("{origin}/.burrow/auth?code="))
        .expect("auth URL on the app's origin");
    assert!(code.starts_with("bc_") && code.len() > 40, "{code}");
    let row = w.env.wait_audit(|r| r.outcome == "app launched").await;
    assert_eq!(row.port, Some(8080));
    assert_eq!(row.user.as_deref(), Some("alice"));
}

#[tokio::test]
async fn launch_refuses_ports_the_agent_does_not_serve() {
    let w = world().await;
    for port in ["22", "0", "65536", "x"] {
        let r = browser()
            .post(format!(
                "{}/api/v1/workspaces/box/apps/{port}/launch",
                w.env.base
            ))
            .bearer_auth(&w.alice)
            .send()
            .await
            .expect("launch");
        assert!(
            r.status() == 404 || r.status() == 400,
            "{port}: {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn launch_refuses_names_that_cannot_make_an_origin() {
    let env = Env::start_with_apps(|_| {}).await;
    let token = env.user("alice").await;
    let agent_token = env.workspace("Dev_1", "alice").await;
    let _agent = env.agent(&agent_token, &[8080]).await;
    let r = launch_request(
        &env,
        As::Token(&token),
        "Dev_1",
        8080,
        &LaunchRequest::default(),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        api_error(r).await.message,
        r#"workspace name "Dev_1" cannot name a browser origin: use lowercase letters, digits and -"#
    );
}

#[tokio::test]
async fn launch_refuses_deep_links_that_leave_the_app() {
    let w = world().await;
    for path in [
        "//evil.example/",
        "/\\evil.example",
        "https://evil.example/",
        "/.burrow/auth?code=x",
        "/./.burrow/sw.js",
        "relative",
        "/a\nb",
    ] {
        let r = launch_request(
            &w.env,
            As::Token(&w.alice),
            "box",
            8080,
            &deep_link(path, false),
        )
        .await;
        assert_eq!(r.status(), 400, "{path:?}");
    }
    let long = format!("/{}", "a".repeat(2048));
    let r = launch_request(
        &w.env,
        As::Token(&w.alice),
        "box",
        8080,
        &deep_link(&long, false),
    )
    .await;
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn launch_without_an_apps_url_is_409_apps_disabled() {
    let env = Env::start().await;
    let token = env.user("alice").await;
    let agent_token = env.workspace("box", "alice").await;
    let _agent = env.agent(&agent_token, &[8080]).await;
    let r = launch_request(
        &env,
        As::Token(&token),
        "box",
        8080,
        &LaunchRequest::default(),
    )
    .await;
    assert_eq!(r.status(), 409);
    let e = api_error(r).await;
    assert_eq!(e.code, ErrorCode::AppsDisabled);
    assert!(e.message.contains("--apps-url"), "{e}");
}

// Codes.

#[tokio::test]
async fn a_code_sets_a_partitioned_credential_and_lands_on_the_deep_link() {
    let w = world().await;
    let l = launch(
        &w.env,
        As::Token(&w.alice),
        "box",
        8080,
        &deep_link("/deep/link?q=1", false),
    )
    .await;
    let r = open_launch(&w.env, &l, None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), Some("/deep/link?q=1"));
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
    let (cookie, whole) = set_cookie(&r, "__Host-burrow_app").expect("credential");
    assert!(cookie.starts_with("__Host-burrow_app=bp_"), "{cookie}");
    assert_eq!(
        whole,
        format!("{cookie}; Path=/; Secure; HttpOnly; SameSite=None; Partitioned")
    );
    let row = w
        .env
        .wait_audit(|r| r.outcome == "app credential issued")
        .await;
    assert_eq!((row.user.as_deref(), row.port), (Some("alice"), Some(8080)));

    // Embedded in the dashboard, it lands on the shell, which loads the app.
    let l = launch(
        &w.env,
        As::Token(&w.alice),
        "box",
        8080,
        &deep_link("/deep/link?q=1", true),
    )
    .await;
    let r = open_launch(&w.env, &l, None).await;
    assert_eq!(r.status(), 303);
    assert_eq!(
        header(&r, "location"),
        Some("/.burrow/shell.html?next=%2Fdeep%2Flink%3Fq%3D1")
    );
}

fn assert_bad_code_page(r: &Response, dashboard: &str) {
    assert_eq!(r.status(), 400);
    assert!(set_cookie(r, "__Host-burrow_app").is_none());
    assert_eq!(
        header(r, "content-security-policy"),
        Some(format!("frame-ancestors 'self' {dashboard}").as_str())
    );
    assert_eq!(header(r, "cache-control"), Some("no-store"));
}

#[tokio::test]
async fn a_code_works_once() {
    let w = world().await;
    let l = w.launch(8080).await;
    assert_eq!(open_launch(&w.env, &l, None).await.status(), 303);
    let again = open_launch(&w.env, &l, None).await;
    assert_bad_code_page(&again, &w.env.dashboard());
    let text = again.text().await.expect("page");
    assert!(
        text.contains(
            "this link was already used or has expired: open the app from the dashboard again"
        ),
        "{text}"
    );
    w.env
        .wait_audit(|r| r.outcome == "refused: bad app code")
        .await;
}

#[tokio::test]
async fn an_expired_code_is_refused() {
    let w = world_with(|c| c.timing.app_code_ttl = std::time::Duration::from_millis(1)).await;
    let l = w.launch(8080).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_bad_code_page(&open_launch(&w.env, &l, None).await, &w.env.dashboard());
}

#[tokio::test]
async fn a_code_redeemed_on_another_apps_host_is_refused_and_spent() {
    let w = world().await;
    let bob = w.env.user("bob").await;
    let bobs_agent = w.env.workspace("bobs", "bob").await;
    let _bobs_agent = w.env.agent(&bobs_agent, &[8080]).await;
    let l = w.launch(8080).await;
    for other in [
        w.env.app_host(8081, "box", "alice"),
        w.env.app_host(8080, "bobs", "bob"),
        w.env.app_host(8080, "box", "bob"),
    ] {
        let l = w.launch(8080).await;
        assert_bad_code_page(
            &open_launch(&w.env, &l, Some(&other)).await,
            &w.env.dashboard(),
        );
        // Spent by the attempt: not usable on its own host afterwards either.
        assert_bad_code_page(&open_launch(&w.env, &l, None).await, &w.env.dashboard());
    }
    // The attempts are in alice's log: the codes were hers.
    let row = w
        .env
        .wait_audit(|r| r.outcome == "refused: app code for another app")
        .await;
    assert_eq!((row.user.as_deref(), row.port), (Some("alice"), Some(8080)));
    // Nor on the dashboard's host, which has no such route at all.
    let (_, path) = split_url(&l.url);
    let r = browser()
        .get(format!("{}{path}", w.env.base))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404);
    assert!(set_cookie(&r, "__Host-burrow_app").is_none());
    let _ = bob;
}

// Credentials and app sessions.

#[tokio::test]
async fn a_credential_of_one_app_is_refused_on_every_other_apps_host() {
    let mut w = world().await;
    let bob = w.env.user("bob").await;
    let bobs_agent = w.env.workspace("bobs", "bob").await;
    let _bobs_agent = w.env.agent(&bobs_agent, &[8080]).await;
    let cookie = credential(&w, 8080).await;
    for (port, ws, user) in [
        (8081, "box", "alice"),
        (8080, "bobs", "bob"),
        (8080, "box", "bob"),
    ] {
        let host = w.env.app_host(port, ws, user);
        let origin = w.env.app_origin(port, ws, user);
        let r = app_session(&w.env, &host, Some(&cookie), Some(&origin)).await;
        assert_eq!(r.status(), 401, "{host}");
        assert_eq!(api_error(r).await.code, ErrorCode::Unauthorized);
        // Nor does it count as a credential for that app's pages.
        let r = navigate(&w.env, &host, "/", Some("document"), Some(&cookie)).await;
        assert_eq!(r.status(), 302, "{host}");
    }
    w.env
        .wait_audit(|r| r.outcome == "refused: unauthorized")
        .await;
    // On its own host it works, and the agent hears of a session for that port alone.
    let host = w.env.app_host(8080, "box", "alice");
    let origin = w.env.app_origin(8080, "box", "alice");
    let r = app_session(&w.env, &host, Some(&cookie), Some(&origin)).await;
    assert_eq!(r.status(), 201);
    let grant: SessionGrant = r.json().await.expect("grant");
    assert_eq!(
        grant.signal_path,
        format!("/.burrow/signal/{}", grant.session_id)
    );
    let path = format!("{}?ticket={}", grant.signal_path, grant.ticket);
    let mut client = ws_on_host(&w.env, &host, &path, Some(&origin))
        .await
        .expect("signal");
    send(&mut client, &common::offer()).await;
    match recv::<ServerToAgent>(&mut w.agent).await {
        ServerToAgent::Session {
            session_id, ports, ..
        } => {
            assert_eq!(session_id, grant.session_id);
            assert_eq!(ports, Some(vec![8080]));
        }
        other => panic!("expected the session, got {other:?}"),
    }
    let row = w.env.wait_audit(|r| r.outcome == "session granted").await;
    assert_eq!(row.port, Some(8080));
    let _ = bob;
}

#[tokio::test]
async fn an_app_session_needs_the_apps_own_origin() {
    let w = world().await;
    let cookie = credential(&w, 8080).await;
    let host = w.env.app_host(8080, "box", "alice");
    let dashboard = w.env.dashboard();
    let other_app = w.env.app_origin(8081, "box", "alice");
    for origin in [
        None,
        Some("http://evil.example"),
        Some(dashboard.as_str()),
        Some(other_app.as_str()),
    ] {
        let r = app_session(&w.env, &host, Some(&cookie), origin).await;
        assert_eq!(r.status(), 403, "{origin:?}");
        assert_eq!(api_error(r).await.code, ErrorCode::Forbidden);
    }
    w.env
        .wait_audit(|r| r.outcome == "refused: no origin")
        .await;
    w.env
        .wait_audit(|r| r.outcome == "refused: foreign origin")
        .await;
    let r = app_session(
        &w.env,
        &host,
        None,
        Some(&w.env.app_origin(8080, "box", "alice")),
    )
    .await;
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn the_first_of_several_credentials_valid_for_the_host_is_used() {
    let w = world().await;
    let other = credential(&w, 8081).await;
    let own = credential(&w, 8080).await;
    let host = w.env.app_host(8080, "box", "alice");
    let both = format!("__Host-burrow_app=bp_forged; {other}; {own}");
    let r = app_session(
        &w.env,
        &host,
        Some(&both),
        Some(&w.env.app_origin(8080, "box", "alice")),
    )
    .await;
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn an_old_agent_gets_no_app_sessions() {
    let env = Env::start_with_apps(|_| {}).await;
    let token = env.user("alice").await;
    let agent_token = env.workspace("box", "alice").await;
    let _agent = env
        .agent_of_version(&agent_token, &[8080], PORT_RESTRICTION_VERSION - 1)
        .await;
    let l = launch(
        &env,
        As::Token(&token),
        "box",
        8080,
        &LaunchRequest::default(),
    )
    .await;
    let r = open_launch(&env, &l, None).await;
    let cookie = set_cookie(&r, "__Host-burrow_app").expect("credential").0;
    let host = env.app_host(8080, "box", "alice");
    let r = app_session(
        &env,
        &host,
        Some(&cookie),
        Some(&env.app_origin(8080, "box", "alice")),
    )
    .await;
    assert_eq!(r.status(), 409);
    let e = api_error(r).await;
    assert_eq!(e.code, ErrorCode::AgentTooOld);
    assert!(
        e.message.contains("the agent is too old for browser apps"),
        "{e}"
    );
    env.wait_audit(|r| r.outcome == "refused: agent too old")
        .await;
    // Its sessions with a token still work.
    assert_eq!(
        env.request_session(&token, "box", false).await.status(),
        201
    );
}

#[tokio::test]
async fn an_app_session_while_the_agent_is_offline_is_409() {
    let w = world().await;
    let cookie = credential(&w, 8080).await;
    drop(w.agent);
    let host = w.env.app_host(8080, "box", "alice");
    let origin = w.env.app_origin(8080, "box", "alice");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        let r = app_session(&w.env, &host, Some(&cookie), Some(&origin)).await;
        if r.status() == 409 {
            assert_eq!(api_error(r).await.code, ErrorCode::AgentOffline);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "agent never went offline"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn app_grant(w: &World, port: u16) -> SessionGrant {
    let cookie = credential(w, port).await;
    let host = w.env.app_host(port, "box", "alice");
    let r = app_session(
        &w.env,
        &host,
        Some(&cookie),
        Some(&w.env.app_origin(port, "box", "alice")),
    )
    .await;
    assert_eq!(r.status(), 201);
    r.json().await.expect("grant")
}

#[tokio::test]
async fn the_signaling_websocket_refuses_foreign_origins_without_spending_the_ticket() {
    let w = world().await;
    let grant = app_grant(&w, 8080).await;
    let host = w.env.app_host(8080, "box", "alice");
    let path = format!("{}?ticket={}", grant.signal_path, grant.ticket);
    let dashboard = w.env.dashboard();
    for origin in [None, Some("http://evil.example"), Some(dashboard.as_str())] {
        assert_refused(ws_on_host(&w.env, &host, &path, origin).await, 403);
    }
    // The app's own origin still can.
    ws_on_host(
        &w.env,
        &host,
        &path,
        Some(&w.env.app_origin(8080, "box", "alice")),
    )
    .await
    .expect("signal");
}

#[tokio::test]
async fn an_apps_session_signals_on_its_own_host_only() {
    let w = world().await;
    let grant = app_grant(&w, 8080).await;
    let path = format!("{}?ticket={}", grant.signal_path, grant.ticket);
    // On another app's host, from that app's page.
    let other = w.env.app_host(8081, "box", "alice");
    assert_refused(
        ws_on_host(
            &w.env,
            &other,
            &path,
            Some(&w.env.app_origin(8081, "box", "alice")),
        )
        .await,
        401,
    );
    // On the dashboard's signaling endpoint.
    let dashboard_path = format!(
        "/api/v1/sessions/{}/signal?ticket={}",
        grant.session_id, grant.ticket
    );
    let host = w.env.server.http_addr.to_string();
    assert_refused(ws_on_host(&w.env, &host, &dashboard_path, None).await, 401);
    w.env
        .wait_audit(|r| r.outcome == "refused: session of another origin")
        .await;
    // Nor may a token's session signal on an app's host.
    let token_grant = w.env.grant(&w.alice, "box").await;
    let app_host = w.env.app_host(8080, "box", "alice");
    let path = format!(
        "/.burrow/signal/{}?ticket={}",
        token_grant.session_id, token_grant.ticket
    );
    assert_refused(
        ws_on_host(
            &w.env,
            &app_host,
            &path,
            Some(&w.env.app_origin(8080, "box", "alice")),
        )
        .await,
        401,
    );
    // Both are intact where they belong.
    let path = format!("{}?ticket={}", grant.signal_path, grant.ticket);
    ws_on_host(
        &w.env,
        &app_host,
        &path,
        Some(&w.env.app_origin(8080, "box", "alice")),
    )
    .await
    .expect("app session signals on its host");
    w.env
        .client_socket(&token_grant)
        .await
        .expect("token session signals");
}

// Logout.

#[tokio::test]
async fn logout_ends_the_login_and_revokes_its_app_credentials_and_codes() {
    let w = world().await;
    let login_cookie = login(&w.env, &w.alice).await;
    let dashboard = w.env.dashboard();
    let from_dashboard = As::Browser(&login_cookie, Some(&dashboard));
    let l = launch(
        &w.env,
        from_dashboard,
        "box",
        8080,
        &LaunchRequest::default(),
    )
    .await;
    let r = open_launch(&w.env, &l, None).await;
    let app_cookie = set_cookie(&r, "__Host-burrow_app").expect("credential").0;
    let unused = launch(
        &w.env,
        As::Browser(&login_cookie, Some(&dashboard)),
        "box",
        8081,
        &LaunchRequest::default(),
    )
    .await;
    let host = w.env.app_host(8080, "box", "alice");
    let origin = w.env.app_origin(8080, "box", "alice");
    assert_eq!(
        navigate(&w.env, &host, "/", Some("document"), Some(&app_cookie))
            .await
            .status(),
        200
    );
    assert_eq!(
        app_session(&w.env, &host, Some(&app_cookie), Some(&origin))
            .await
            .status(),
        201
    );

    // Logging out needs the dashboard's page too.
    let r = browser()
        .post(format!("{}/api/v1/logout", w.env.base))
        .header("cookie", &login_cookie)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 403);
    assert_eq!(
        app_session(&w.env, &host, Some(&app_cookie), Some(&origin))
            .await
            .status(),
        201
    );

    let r = browser()
        .post(format!("{}/api/v1/logout", w.env.base))
        .header("cookie", &login_cookie)
        .header("origin", &dashboard)
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 204);
    let (_, cleared) = set_cookie(&r, "__Host-burrow_session").expect("cleared cookie");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    w.env.wait_audit(|r| r.outcome == "logged out").await;

    let me = get_with_cookie(&w.env, "/api/v1/me", &login_cookie).await;
    assert_eq!(me.status(), 401);
    assert_eq!(
        app_session(&w.env, &host, Some(&app_cookie), Some(&origin))
            .await
            .status(),
        401
    );
    assert_eq!(
        navigate(&w.env, &host, "/", Some("document"), Some(&app_cookie))
            .await
            .status(),
        302
    );
    assert_bad_code_page(&open_launch(&w.env, &unused, None).await, &dashboard);
}

// What app hosts serve.

#[tokio::test]
async fn the_dashboards_api_and_pages_do_not_answer_on_an_app_host() {
    let w = world().await;
    let host = w.env.app_host(8080, "box", "alice");
    let cookie = login(&w.env, &w.alice).await;
    for (method, path) in [
        (Method::GET, "/api/v1/workspaces"),
        (Method::GET, "/api/v1/me"),
        (Method::GET, "/api/v1/audit"),
        (Method::POST, "/api/v1/workspaces/box/sessions"),
        (Method::POST, "/api/v1/workspaces/box/apps/8080/launch"),
        (Method::POST, "/api/v1/login"),
        (Method::GET, "/api/v1/agent/connect"),
        (Method::GET, "/healthz"),
        (Method::GET, "/pkg/client/burrow_client.js"),
    ] {
        let r = w
            .env
            .on_host(method.clone(), &host, path)
            .bearer_auth(&w.alice)
            .header("cookie", &cookie)
            .header("origin", w.env.dashboard())
            .header("sec-fetch-dest", "empty")
            .json(&serde_json::json!({ "token": w.alice }))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{method} {path}");
        assert!(set_cookie(&r, "__Host-burrow_session").is_none());
        assert_eq!(
            r.text().await.expect("body"),
            "served by the Burrow service worker"
        );
    }
    // A top-level navigation to / gets the way to authorize, not the dashboard.
    let r = navigate(&w.env, &host, "/", None, Some(&cookie)).await;
    assert_eq!(r.status(), 302);
}

#[tokio::test]
async fn app_host_paths_get_only_the_shell_a_redirect_or_a_404() {
    let w = world().await;
    let host = w.env.app_host(8080, "box", "alice");
    let cookie = credential(&w, 8080).await;
    let dashboard = w.env.dashboard();
    for path in [
        "/",
        "/index.html",
        "/deep/link?q=1",
        "/api/v1/workspaces",
        "/sw.js",
        "/%2e%2e/x",
    ] {
        for dest in [
            None,
            Some("document"),
            Some("iframe"),
            Some("frame"),
            Some("script"),
            Some("empty"),
            Some("image"),
            Some("serviceworker"),
            Some("worker"),
        ] {
            for credential in [None, Some(cookie.as_str())] {
                let r = navigate(&w.env, &host, path, dest, credential).await;
                let status = r.status();
                assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
                let location = header(&r, "location").map(str::to_owned);
                let csp = header(&r, "content-security-policy").map(str::to_owned);
                let body = r.text().await.expect("body");
                let what = format!("{path} {dest:?} {}", credential.is_some());
                match status.as_u16() {
                    200 => {
                        assert_eq!(body, SHELL_HTML, "{what}");
                        assert_eq!(
                            csp,
                            Some(format!("frame-ancestors 'self' {dashboard}")),
                            "{what}"
                        );
                        assert!(
                            credential.is_some() || matches!(dest, Some("iframe" | "frame")),
                            "{what}"
                        );
                    }
                    302 => {
                        let location = location.expect("location");
                        assert!(
                            location.starts_with(&format!(
                                "{dashboard}/apps/authorize?app=8080--box--alice&next="
                            )),
                            "{what}: {location}"
                        );
                        assert!(
                            credential.is_none() && matches!(dest, None | Some("document")),
                            "{what}"
                        );
                    }
                    404 => {
                        assert_eq!(body, "served by the Burrow service worker", "{what}");
                        assert!(
                            !matches!(dest, None | Some("document" | "iframe" | "frame")),
                            "{what}"
                        );
                    }
                    other => panic!("{what}: HTTP {other}"),
                }
            }
        }
    }
    // The reserved prefix has only Burrow's files.
    for path in [
        "/.burrow",
        "/.burrow/",
        "/.burrow/app.js",
        "/.burrow/signal",
        "/.burrow/pkg/nope.js",
    ] {
        let r = navigate(&w.env, &host, path, Some("document"), Some(&cookie)).await;
        assert_eq!(r.status(), 404, "{path}");
    }
    // A form POST (another site's, say) gets what a navigation gets: never the app.
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let r = w
            .env
            .on_host(method.clone(), &host, "/form")
            .header("sec-fetch-dest", "iframe")
            .header("cookie", &cookie)
            .body("a=b")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(r.text().await.expect("body"), SHELL_HTML);
        let r = w
            .env
            .on_host(method.clone(), &host, "/form")
            .header("sec-fetch-dest", "document")
            .body("a=b")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 302, "{method}");
        let r = w
            .env
            .on_host(method.clone(), &host, "/form")
            .header("sec-fetch-dest", "empty")
            .header("cookie", &cookie)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{method}");
    }
}

#[tokio::test]
async fn a_top_level_visit_without_a_credential_is_sent_to_the_dashboard_to_authorize() {
    let w = world().await;
    let host = w.env.app_host(8080, "box", "alice");
    let r = navigate(
        &w.env,
        &host,
        "/deep/link?q=1&r=a%20b",
        Some("document"),
        None,
    )
    .await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        header(&r, "location").map(str::to_owned),
        Some(format!(
            "{}/apps/authorize?app=8080--box--alice&next=%2Fdeep%2Flink%3Fq%3D1%26r%3Da%2520b",
            w.env.dashboard()
        ))
    );
    // Framed in the dashboard, the shell loads and asks the dashboard itself.
    let r = navigate(&w.env, &host, "/deep/link", Some("iframe"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "referrer-policy"), Some("same-origin"));
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
}

#[tokio::test]
async fn an_apps_worker_that_was_not_staged_gets_no_script() {
    let w = world().await;
    let host = w.env.app_host(8080, "box", "alice");
    let cookie = credential(&w, 8080).await;
    for path in ["/sw.js", "/service-worker.js"] {
        let r = navigate(&w.env, &host, path, Some("serviceworker"), Some(&cookie)).await;
        assert_eq!(r.status(), 404);
        assert_eq!(
            header(&r, "content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(
            r.text().await.expect("body"),
            "served by the Burrow service worker"
        );
    }
    // Burrow's own is served, allowed to control the whole origin.
    let r = navigate(&w.env, &host, "/.burrow/sw.js", Some("serviceworker"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "service-worker-allowed"), Some("/"));
    assert_eq!(
        header(&r, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
}

/// `PUT /.burrow/app-worker?src=SRC` on `host`: an app page staging its own worker.
async fn stage_worker(
    env: &Env,
    host: &str,
    src: &str,
    cookie: Option<&str>,
    origin: Option<&str>,
) -> Response {
    let path = format!("/.burrow/app-worker?src={}", urlencode(src));
    let mut req = env
        .on_host(Method::PUT, host, &path)
        .body("self.staged = 1;");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("stage")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

const WEBVIEW_WORKER: &str = "/static/pre/service-worker.js?v=4&platform=browser";

#[tokio::test]
async fn an_apps_staged_worker_registers_as_burrows_bootstrap_below_the_root_only() {
    let w = world().await;
    let host = w.env.app_host(8080, "box", "alice");
    let origin = w.env.app_origin(8080, "box", "alice");
    let cookie = credential(&w, 8080).await;
    let r = stage_worker(&w.env, &host, WEBVIEW_WORKER, Some(&cookie), Some(&origin)).await;
    assert_eq!(r.status(), 204);
    // The registration's request gets Burrow's bootstrap, limited to the script's folder.
    let r = navigate(&w.env, &host, WEBVIEW_WORKER, Some("serviceworker"), None).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "service-worker-allowed"), None);
    assert_eq!(
        r.text().await.expect("body"),
        include_str!("../../../web/burrow-sw.js")
    );
    // Its importScripts gets the staged bytes, with the origin's credential only.
    let staged = format!("/.burrow/app-worker?src={}", urlencode(WEBVIEW_WORKER));
    let r = navigate(&w.env, &host, &staged, Some("script"), Some(&cookie)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.expect("body"), "self.staged = 1;");
    let r = navigate(&w.env, &host, &staged, Some("script"), None).await;
    assert_eq!(r.status(), 404, "no credential, no script");
    let r = w
        .env
        .on_host(Method::GET, &host, &staged)
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 404, "another site's page gets nothing");
    // Another app of the same user has no such worker.
    let other = w.env.app_host(8081, "box", "alice");
    let r = navigate(&w.env, &other, WEBVIEW_WORKER, Some("serviceworker"), None).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn staging_a_worker_needs_the_apps_origin_and_credential_and_a_folder_below_the_root() {
    let w = world().await;
    let host = w.env.app_host(8080, "box", "alice");
    let origin = w.env.app_origin(8080, "box", "alice");
    let cookie = credential(&w, 8080).await;
    let other_origin = w.env.app_origin(8081, "box", "alice");
    let refused = [
        (None, Some(origin.as_str()), 401),
        (Some(cookie.as_str()), None, 403),
        (Some(cookie.as_str()), Some(other_origin.as_str()), 403),
        (Some(cookie.as_str()), Some(w.env.base.as_str()), 403),
    ];
    for (c, o, status) in refused {
        let r = stage_worker(&w.env, &host, WEBVIEW_WORKER, c, o).await;
        assert_eq!(r.status(), status, "cookie {c:?}, origin {o:?}");
    }
    // A credential of another app stages nothing for this one.
    let other_cookie = credential(&w, 8081).await;
    let r = stage_worker(
        &w.env,
        &host,
        WEBVIEW_WORKER,
        Some(&other_cookie),
        Some(&origin),
    )
    .await;
    assert_eq!(r.status(), 401);
    // The root's worker would displace Burrow's; /.burrow/ is Burrow's.
    for src in [
        "/evil-sw.js",
        "/sw.js?x=/a/",
        "/.burrow/x/sw.js",
        "//x/sw.js",
    ] {
        let r = stage_worker(&w.env, &host, src, Some(&cookie), Some(&origin)).await;
        assert_eq!(r.status(), 400, "{src}");
        let r = navigate(&w.env, &host, src, Some("serviceworker"), None).await;
        assert_ne!(r.status(), 200, "{src}");
    }
    let r = navigate(&w.env, &host, WEBVIEW_WORKER, Some("serviceworker"), None).await;
    assert_eq!(r.status(), 404, "nothing was staged");
}

#[tokio::test]
async fn the_dashboards_pages_may_not_be_framed() {
    let w = world().await;
    for path in ["/", "/apps/authorize?app=8080--box--alice&next=%2F"] {
        let r = browser()
            .get(format!("{}{path}", w.env.base))
            .send()
            .await
            .expect("page");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            header(&r, "content-security-policy"),
            Some("frame-ancestors 'none'")
        );
        assert_eq!(header(&r, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&r, "referrer-policy"), Some("no-referrer"));
    }
}

#[tokio::test]
async fn hosts_under_the_apps_domain_that_name_no_app_get_neither_site() {
    let w = world().await;
    let port = w.env.server.http_addr.port();
    for host in [
        format!("www.localhost:{port}"),
        format!("x.8080--box--alice.localhost:{port}"),
        format!("8080--Box_1--alice.localhost:{port}"),
    ] {
        let r = w
            .env
            .on_host(Method::GET, &host, "/api/v1/workspaces")
            .bearer_auth(&w.alice)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{host}");
        let r = w
            .env
            .on_host(Method::GET, &host, "/")
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 404, "{host}");
    }
    // A host on another port is not under the apps URL: the dashboard answers it.
    let r = w
        .env
        .on_host(
            Method::GET,
            &format!("8080--box--alice.localhost:{}", port + 1),
            "/api/v1/workspaces",
        )
        .bearer_auth(&w.alice)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cors_applies_to_the_dashboards_host_only() {
    let w = world_with(|c| c.cors_allow_origins = vec!["http://127.0.0.1:9000".into()]).await;
    let preflight = |host: String| {
        w.env
            .on_host(Method::OPTIONS, &host, "/api/v1/workspaces/box/sessions")
            .header("origin", "http://127.0.0.1:9000")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let r = preflight(w.env.server.http_addr.to_string())
        .await
        .expect("preflight");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        Some("http://127.0.0.1:9000")
    );
    let r = preflight(w.env.app_host(8080, "box", "alice"))
        .await
        .expect("preflight");
    assert_eq!(header(&r, "access-control-allow-origin"), None);
}
