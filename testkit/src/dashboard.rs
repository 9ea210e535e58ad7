//! The dashboard's login as a client without a browser does it: the form's own cookie and
//! CSRF token, then the session cookie the login answers with.

/// `GET /admin/login`: the form's cookie (`name=value`) and its CSRF token.
pub struct LoginForm {
    pub cookie: String,
    pub csrf: String,
}

pub async fn login_form(http: &reqwest::Client, base: &str) -> LoginForm {
    let r = http
        .get(format!("{base}/admin/login"))
        .send()
        .await
        .expect("the login form");
    let cookie = set_cookie(&r, "drove_login")
        .and_then(|c| c.split(';').next().map(str::to_string))
        .expect("the login form's cookie");
    let csrf = csrf_field(&r.text().await.expect("the login form"));
    LoginForm { cookie, csrf }
}

/// The value of a page's first `csrf` form field.
pub fn csrf_field(html: &str) -> String {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a csrf field")
        .to_string()
}

/// The whole `Set-Cookie` (attributes too) an answer gives for the cookie `name`.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Logs in with `secret` (through a client that does not follow redirects); the session
/// cookie as `name=value`.
pub async fn login(http: &reqwest::Client, base: &str, secret: &str) -> String {
    let form = login_form(http, base).await;
    let r = http
        .post(format!("{base}/admin/login"))
        .header("Cookie", &form.cookie)
        .form(&[("secret", secret), ("csrf", form.csrf.as_str())])
        .send()
        .await
        .expect("the login");
    set_cookie(&r, "drove_session")
        .and_then(|c| c.split(';').next().map(str::to_string))
        .expect("a session cookie")
}
