#!/usr/bin/env python3
"""Logout: the relying party's logout request and the browser's logout that ends the
applications it signed in (OIDC RP-Initiated Logout 1.0 §2, §2.1, §3, §3.1, §4, §5; OIDC Core
§2 for the ID token used as a hint; RFC 9700 §4.7; SECURITY O39, O40).

Starts its own Postgres cluster (test_login.run_with_env) and one Tessera instance whose
TESSERA_PUBLIC_URL is https://auth.example.test:8443 (issuer https://auth.example.test:8443/t/acme),
as test_authorize does, whose helpers it uses. Clients:
- web: confidential, authorization_code + refresh_token, https://app.example/cb, post-logout
  URIs https://app.example/bye and https://app.example/bye?x=1;
- web2: the same grants and redirect URI, post-logout URI https://other.example/bye;
- short: web's grants, no post-logout URI, token lifetime 1 s (set by SQL: the ID token's exp is
  iat + the client's token_lifetime_s, auth/code.c), so that its ID token is an expired hint;
- app, svc (test_login.Env): the JSON login API's first-party client, introspection;
- beta's client in another tenant (with beta's own user): a foreign ID token.
Checks:
- the admin CLI: --post-logout-redirect-uri repeated → post_logout_redirect_uris in the JSON and
  in clients.post_logout_redirect_uris, redirect_uris untouched; none → []; javascript:, data:,
  vbscript:, file:, blob:, about:, a relative URI, a fragment → exit 2 and no client;
- discovery (§2.1): end_session_endpoint = issuer + /oauth2/logout (acme and beta);
- RP logout, GET and POST /t/acme/oauth2/logout (§2, §3, §4): the confirmation page (200 HTML,
  O40's headers, a form posting to /t/acme/logout whose hidden inputs carry client_id,
  post_logout_redirect_uri and state when given, client_id from the hint's aud when only the
  hint was given; unknown parameters ignored; a cross-site POST allowed; a state with " < > & '
  HTML-escaped and round-tripped; an expired ID token accepted as hint); 400 pages for a
  parameter given twice (GET and POST), a URI without client_id or hint, a URI not registered
  byte for byte (a redirect_uri, trailing slash, another query, case, http, another client's, a
  fragment), a client_id other than the hint's aud, an unknown or another tenant's client_id, and
  hints that are not this tenant's ID tokens (an access token, beta's ID token, a changed payload,
  a changed signature, alg none, garbage); neither GET nor POST changes anything (the cookie still
  answers /authorize, no session revoked);
- SSO logout, POST /t/acme/logout with the confirmation page's fields: the 303 to the post-logout
  URI with state (URL-encoded; & after a URI with a query; the URI alone without state), no-store,
  the cookie cleared (Max-Age=0); the browser session and every app session its codes made (the
  login page's and a silent one, another client's) end: refresh invalid_grant, /verify 401,
  introspection inactive; the same user's sessions made elsewhere (the JSON login API, another
  browser) keep refreshing and verifying; a tampered form (an unregistered URI, another client's,
  an unknown client) → 400 and nothing ended; a cross-site post → 403 and nothing ended; no
  cookie with a valid redirect → 303; without a URI → the "Signed out" page; the logout's audit
  row: details sessions (the count it ended) and browser true;
- SSO logout: a code (from the login page or answered silently) whose browser session logged out
  before redemption → invalid_grant;
- SSO re-login: the same user's login on the page while the cookie is sent renews the browser
  session (a new cookie for the same session id; the old cookie is login_required at prompt=none);
  its app sessions and a second tab's pending code keep their link (ended by the logout, counted
  in its audit row); another user's login replaces the browser session and the cookie;
- hint logout: from a browser without the cookie, the confirmation page carries the verified
  hint, and its post (the hint verified again: an altered one is 400) ends the hint's session
  only: the browser session and its other application sessions live on; the audit row;
- SSO audit: the login page's login row has flow authorization_code; a silent authorization
  writes sso_login (actor the user, target the browser session, its client_id): no credential
  was presented, so it is no login_succeeded.
Skips (77) when Postgres is not installed, as the other run_with_env tests do.
"""
import base64
import json
import os
import re
import subprocess
import time
import urllib.parse

from tessera_harness import check_clean_exit, tessera_bin
from test_authorize import (AUDIT_S, CB, FORM, FRESH, ORIGIN, PUBLIC_URL, REVOKE_S, VERIFIER, Live, Page,
                            base_params, cookie_of, error_redirect, is_html, o40_missing, oerr, one, other, parse_page,
                            post_login, redeem, redirect_query, refresh, refused_everywhere, show, sso_authorize,
                            sso_code, start, wait_for)
from test_login import PASSWORD, TENANT, basic, call, good_login, hdr, introspect, jbody, jwt_claims, run_with_env, verify

RP_PATH = "/t/%s/oauth2/logout" % TENANT      # RP-Initiated Logout §2: the end_session_endpoint
LOGOUT_PATH = "/t/%s/logout" % TENANT         # the browser's logout (the confirmation's form)
BYE = "https://app.example/bye"
BYE_Q = "https://app.example/bye?x=1"
OTHER_BYE = "https://other.example/bye"
EVIL_BYE = "https://evil.example/bye"
BETA = "beta"
BETA_USER = "zed"
ODD_STATE = "q\"<zq>&'z =1"                    # HTML-special and URL-special characters at once
SHORT_LIFETIME_S = 1                          # the short client's token (and ID token) lifetime
EXPIRED_WAIT_MAX_S = 3.0                      # the most this file sleeps for the expired hint


# ---------------------------------------------------------------------------- helpers

def rp_logout(port, params, method="GET", headers=None):
    """GET or POST /t/acme/oauth2/logout; params: a dict or a list of pairs (repeats allowed)."""
    pairs = list(params.items()) if isinstance(params, dict) else list(params)
    query = urllib.parse.urlencode([(k, v) for k, v in pairs if v is not None])
    if method == "GET":
        return call(port, "GET", RP_PATH + ("?" + query if query else ""), headers=headers or {})
    return call(port, "POST", RP_PATH, query, dict(FORM, **(headers or {})))


def sso_logout(port, sso=None, fields=None, origin=ORIGIN, extra=None):
    """POST /t/acme/logout with the browser's cookie (when sso) and the form's fields."""
    headers = dict(FORM)
    if sso:
        headers["Cookie"] = "tessera_sso=" + sso
    if origin:
        headers["Origin"] = origin
    headers.update(extra or {})
    pairs = list(fields.items()) if isinstance(fields, dict) else list(fields or [])
    return call(port, "POST", LOGOUT_PATH, urllib.parse.urlencode([(k, v) for k, v in pairs if v is not None]),
                headers)


def logout_form(page):
    """The page's <form method=post action=/t/acme/logout> (its attributes), or None."""
    for f in page.forms:
        if f.get("method", "").lower() == "post" and f.get("action") == LOGOUT_PATH:
            return f
    return None


def hidden(page, name):
    """The value of the page's input name (None when absent or empty); a visible one is reported."""
    for a in page.inputs:
        if a.get("name") == name:
            if a.get("type", "").lower() != "hidden":
                return "<not a hidden input: %r>" % a
            return a.get("value") or None
    return None


def form_fields(page):
    """What a browser posts from the page's form: every named input."""
    return [(a["name"], a.get("value") or "") for a in page.inputs if a.get("name")]


def confirm_page(res, label, resp, client_id=None, uri=None, state=None):
    """The confirmation page: 200 HTML, the form, exactly these hidden values, the cookie untouched."""
    status, headers, body = resp
    page = parse_page(body)
    got = {n: hidden(page, n) for n in ("client_id", "post_logout_redirect_uri", "state")}
    want = {"client_id": client_id, "post_logout_redirect_uri": uri, "state": state}
    ok = (status == 200 and is_html(headers) and logout_form(page) is not None and got == want
          and hdr(headers, "location") is None and cookie_of(headers, "tessera_sso")[0] is None)
    res.check(label, ok, "%s; forms %r; hidden %r, expected %r" % (show(resp), page.forms, got, want))
    return page


def page_headers(res, label, resp):
    miss = o40_missing(resp[1])
    res.check(label + ": CSP frame-ancestors 'none', X-Frame-Options DENY, Referrer-Policy no-referrer, no-store",
              not miss, "; ".join(miss))


def rp_error(res, label, resp):
    """A 400 HTML page: no redirect, no logout form, the cookie untouched."""
    status, headers, body = resp
    res.check(label, status == 400 and is_html(headers) and hdr(headers, "location") is None
              and logout_form(parse_page(body)) is None and cookie_of(headers, "tessera_sso")[0] is None, show(resp))


def cleared(headers):
    val, attrs = cookie_of(headers, "tessera_sso")
    return val == "" and attrs.get("max-age") == "0"


def b64url_json(obj):
    return base64.urlsafe_b64encode(json.dumps(obj, separators=(",", ":")).encode()).rstrip(b"=").decode()


def with_aud(tok, aud):
    """The token with its payload's aud changed, header and signature kept."""
    head, _, sig = tok.split(".")
    claims = jwt_claims(tok)
    claims["aud"] = aud
    return "%s.%s.%s" % (head, b64url_json(claims), sig)


def flip_sig(tok):
    """The token with a character in the middle of its signature changed."""
    head, payload, sig = tok.split(".")
    i = len(sig) // 2
    return "%s.%s.%s%s" % (head, payload, sig[:i], other(sig[i:]))


def alg_none(tok):
    """The token's claims under an unsigned header (RFC 7519 §6)."""
    return "%s.%s." % (b64url_json({"alg": "none", "typ": "JWT"}), tok.split(".")[1])


def aud_of(tok):
    aud = jwt_claims(tok).get("aud")
    return aud[0] if isinstance(aud, list) and len(aud) == 1 else aud


def browser_login(res, port, client, label, username="alice", sso=None):
    """A login on the login page: (the tessera_sso it sets, the code). With sso the page is asked
    for with prompt=login and that cookie, and the login posted with it too."""
    if sso:
        page = Page(sso_authorize(port, client, sso, prompt="login"))
        if not page.ok():
            res.check("%s: prompt=login with the cookie → the login page" % label, False,
                      show((page.status, page.headers, page.body)))
            raise RuntimeError("%s: no login page" % label)
        extra = {"Cookie": "tessera_csrf=%s; tessera_sso=%s" % (page.cookie, sso)}
    else:
        page = start(res, port, client, label)
        extra = None
    resp = post_login(port, page, username, extra=extra)
    cookie, _ = cookie_of(resp[1], "tessera_sso")
    code = one(redirect_query(hdr(resp[1], "location"), CB), "code")
    if resp[0] != 303 or not cookie or code is None:
        res.check("%s: login → 303 with a code and tessera_sso" % label, False, show(resp))
        raise RuntimeError("%s: no code" % label)
    return cookie, code


def session(res, port, client, code, label):
    """The code redeemed: {rt, at, idt, sid} of the app session it made."""
    st, _, body = redeem(port, client, code)
    if st != 200 or not body.get("refresh_token") or not body.get("access_token"):
        res.check("%s: the code redeemed → 200 with tokens" % label, False, "%s %r" % (st, body))
        raise RuntimeError("%s: no tokens" % label)
    rt = body["refresh_token"]
    return {"rt": rt, "at": body["access_token"], "idt": body.get("id_token"), "sid": rt[3:39]}


def api_session(res, env, port, label):
    st, _, body = good_login(env, port, "alice")
    if st != 200 or not body.get("refresh_token"):
        res.check("%s: POST /api/v1/auth/login → 200" % label, False, "%s %r" % (st, body))
        raise RuntimeError("%s: no API login" % label)
    rt = body["refresh_token"]
    return {"rt": rt, "at": body["access_token"], "idt": None, "sid": rt[3:39]}


def ended(res, label, env, port, client, sess):
    """The session ended: refresh invalid_grant at once; the access token refused everywhere soon."""
    r = refresh(port, client, sess["rt"])
    res.check("%s: its refresh token → 400 invalid_grant" % label, r[0] == 400 and oerr(r) == "invalid_grant",
              "%s %r" % (r[0], r[2]))
    refused, took = refused_everywhere(port, sess["at"])
    res.check("%s: its access token → 401 at /verify (within %.0f s)" % (label, REVOKE_S), refused,
              "after %.1f s" % took)
    svc = env.clients["svc"]
    inactive = wait_for(lambda: all(introspect(port, sess["at"], svc)[1].get("active") is False
                                    for _ in range(FRESH)), REVOKE_S)
    res.check("%s: its access token → active false at introspection" % label, inactive,
              repr(introspect(port, sess["at"], svc)))


def alive(res, label, port, client, sess):
    """The session lives: the access token it held passes /verify, its refresh token rotates."""
    res.check("%s: its access token still passes /verify" % label,
              all(verify(port, sess["at"])[0] == 200 for _ in range(FRESH)))
    st, _, body = refresh(port, client, sess["rt"])
    ok = st == 200 and bool(body.get("refresh_token")) and bool(body.get("access_token"))
    res.check("%s: its refresh token still refreshes (200)" % label, ok, "%s %r" % (st, body))
    if ok:
        sess["rt"], sess["at"] = body["refresh_token"], body["access_token"]


def logout_audit(env, sid):
    """details->>'sessions' | details->>'browser' of the logout rows naming the browser session."""
    q = ("SELECT coalesce(details->>'sessions', '<none>') || '|' || coalesce(details->>'browser', '<none>') "
         "FROM audit_log WHERE action = 'logout' AND target_id = '%s'" % sid)
    return wait_for(lambda: env.sql(q), AUDIT_S) or ""


def revoked(env, *sids):
    return env.sql("SELECT count(*) FROM sessions WHERE id IN (%s) AND revoked_at IS NOT NULL"
                   % ", ".join("'%s'" % re.sub(r"[^0-9a-f-]", "", s) for s in sids))


def beta_id_token(res, env, port):
    """An ID token of the other tenant (its key, its issuer), by beta's own login page."""
    beta = env.clients["beta"]
    page = Page(call(port, "GET", "/t/%s/oauth2/authorize?%s" % (BETA, urllib.parse.urlencode(base_params(beta)))))
    if not page.ok():
        res.check("beta: the login page", False, show((page.status, page.headers, page.body)))
        raise RuntimeError("beta: no login page")
    form = urllib.parse.urlencode({"authz": page.authz, "csrf": page.csrf, "username": BETA_USER,
                                   "password": PASSWORD})
    resp = call(port, "POST", "/t/%s/login" % BETA, form, dict(FORM, Cookie="tessera_csrf=" + page.cookie,
                                                                 Origin=ORIGIN))
    code = one(redirect_query(hdr(resp[1], "location"), CB), "code")
    body = urllib.parse.urlencode({"grant_type": "authorization_code", "code": code or "", "redirect_uri": CB,
                                   "code_verifier": VERIFIER})
    st, _, data = call(port, "POST", "/t/%s/oauth2/token" % BETA, body, dict(FORM, Authorization=basic(beta)))
    idt = jbody(data).get("id_token")
    if not idt:
        res.check("beta: an ID token", False, "%s; token %s %r" % (show(resp), st, data[:300]))
        raise RuntimeError("beta: no ID token")
    return idt


# ---------------------------------------------------------------------------- setup

def setup(env):
    env.client("web", "--grant", "authorization_code", "--grant", "refresh_token", "--redirect-uri", CB,
               "--post-logout-redirect-uri", BYE, "--post-logout-redirect-uri", BYE_Q)
    env.client("web2", "--grant", "authorization_code", "--grant", "refresh_token", "--redirect-uri", CB,
               "--post-logout-redirect-uri", OTHER_BYE)
    env.client("short", "--grant", "authorization_code", "--grant", "refresh_token", "--redirect-uri", CB)
    # The ID token's exp is iat + the client's token_lifetime_s (auth/code.c), read at redemption.
    env.sql("UPDATE clients SET token_lifetime_s = %d WHERE client_id = '%s'"
            % (SHORT_LIFETIME_S, env.clients["short"]["client_id"]))
    env.admin("admin", "tenant", "create", BETA)
    env.admin("admin", "keys", "rotate", "--tenant", BETA)
    env.clients["beta"] = env.admin("admin", "client", "create", "--tenant", BETA, "--name", "b",
                                    "--grant", "authorization_code", "--redirect-uri", CB)
    env.admin("admin", "user", "create", "--tenant", BETA, "--username", BETA_USER, "--password-stdin",
              stdin=(PASSWORD + "\n").encode())
    env.user("alice", email="alice@example.test")
    env.user("bob")


# ---------------------------------------------------------------------------- the admin CLI

def test_cli(res, env):
    web, short = env.clients["web"], env.clients["short"]
    plr = web.get("post_logout_redirect_uris")
    res.check("CLI: --post-logout-redirect-uri given twice → post_logout_redirect_uris [bye, bye?x=1] in the JSON",
              isinstance(plr, list) and sorted(plr) == sorted([BYE, BYE_Q]), repr(web))
    res.check("CLI: ... redirect_uris untouched by it ([cb])", web.get("redirect_uris") == [CB], repr(web))
    stored = env.sql("SELECT array_to_string(post_logout_redirect_uris, ' ') FROM clients WHERE client_id = '%s'"
                     % web["client_id"])
    res.check("CLI: ... stored in clients.post_logout_redirect_uris", sorted(stored.split(" ")) == sorted([BYE, BYE_Q]),
              stored)
    res.check("CLI: a client without the option: post_logout_redirect_uris []",
              short.get("post_logout_redirect_uris") == [], repr(short))
    cli = dict(os.environ, TESSERA_PG_URL=env.pg.url, TESSERA_MASTER_KEY_FILE=env.key)
    bad = ("javascript:alert(1)", "JavaScript://x", "data:text/html,x", "vbscript:msgbox(1)", "file:///etc/passwd",
           "blob:https://app.example/x", "about:blank", "/bye", "https://app.example/bye#f")
    for i, uri in enumerate(bad):
        r = subprocess.run([tessera_bin(), "admin", "client", "create", "--tenant", TENANT, "--name", "plx-%d" % i,
                            "--grant", "authorization_code", "--redirect-uri", CB, "--post-logout-redirect-uri", uri],
                           env=cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        res.check("CLI: --post-logout-redirect-uri %s is a usage error (exit 2)" % uri, r.returncode == 2,
                  "exit %d %s" % (r.returncode, r.stderr.decode()[-200:]))
    n = env.sql("SELECT count(*) FROM clients WHERE name LIKE 'plx-%'")
    res.check("CLI: ... and none of those clients was made", n == "0", n)


# ---------------------------------------------------------------------------- discovery

def test_discovery(res, env, port):
    for slug in (TENANT, BETA):
        st, _, data = call(port, "GET", "/t/%s/.well-known/openid-configuration" % slug)
        doc = jbody(data)
        want = PUBLIC_URL + "/t/%s/oauth2/logout" % slug
        res.check("RP logout discovery (%s): end_session_endpoint = %s" % (slug, want),
                  st == 200 and doc.get("end_session_endpoint") == want, "%s %r" % (st, doc.get("end_session_endpoint")))


# ---------------------------------------------------------------------------- RP logout

def test_rp_logout(res, env, port):
    web, web2, short = env.clients["web"], env.clients["web2"], env.clients["short"]
    wid, w2id = web["client_id"], web2["client_id"]
    # First the short-lived ID token: by the time the expired case comes, its second is long gone.
    _, code = browser_login(res, port, short, "RP logout: short")
    short_idt = session(res, port, short, code, "RP logout: short")["idt"]
    _, code = browser_login(res, port, web, "RP logout: web")
    web_s = session(res, port, web, code, "RP logout: web")
    idt, at = web_s["idt"], web_s["at"]
    _, code = browser_login(res, port, web2, "RP logout: web2")
    w2_idt = session(res, port, web2, code, "RP logout: web2")["idt"]
    beta_idt = beta_id_token(res, env, port)
    res.check("RP logout: the hints are ID tokens for their clients (aud web, web2; beta's iss)",
              aud_of(idt) == wid and aud_of(w2_idt) == w2id and jwt_claims(beta_idt).get("iss") == PUBLIC_URL + "/t/beta"
              and short_idt and aud_of(short_idt) == short["client_id"],
              repr((aud_of(idt), aud_of(w2_idt), jwt_claims(beta_idt).get("iss"))))

    # the confirmation page
    resp = rp_logout(port, {})
    confirm_page(res, "RP logout: GET without parameters → 200 page, a form posting to /t/acme/logout", resp)
    page_headers(res, "RP logout: the confirmation page", resp)
    resp = rp_logout(port, {"client_id": wid, "post_logout_redirect_uri": BYE, "state": "st-1"})
    confirm_page(res, "RP logout: client_id, a registered post_logout_redirect_uri, state → hidden inputs carry them",
                 resp, wid, BYE, "st-1")
    page_headers(res, "RP logout: the page with parameters", resp)
    confirm_page(res, "RP logout: the registered URI with a query (bye?x=1) → 200",
                 rp_logout(port, {"client_id": wid, "post_logout_redirect_uri": BYE_Q}), wid, BYE_Q)
    confirm_page(res, "RP logout: web2 with its own URI → 200",
                 rp_logout(port, {"client_id": w2id, "post_logout_redirect_uri": OTHER_BYE, "state": "s2"}),
                 w2id, OTHER_BYE, "s2")
    confirm_page(res, "RP logout: client_id alone → 200 carrying it", rp_logout(port, {"client_id": wid}), wid)
    confirm_page(res, "RP logout: id_token_hint alone → 200, client_id taken from its aud",
                 rp_logout(port, {"id_token_hint": idt}), wid)
    confirm_page(res, "RP logout: id_token_hint + post_logout_redirect_uri + state, no client_id → 200",
                 rp_logout(port, {"id_token_hint": idt, "post_logout_redirect_uri": BYE_Q, "state": "s3"}),
                 wid, BYE_Q, "s3")
    confirm_page(res, "RP logout: id_token_hint with the same client_id → 200",
                 rp_logout(port, {"id_token_hint": idt, "client_id": wid, "post_logout_redirect_uri": BYE}), wid, BYE)
    confirm_page(res, "RP logout: web2's ID token as hint with web2's URI → 200 carrying web2",
                 rp_logout(port, {"id_token_hint": w2_idt, "post_logout_redirect_uri": OTHER_BYE}), w2id, OTHER_BYE)
    confirm_page(res, "RP logout: unknown parameters (ui_locales, logout_hint, foo) ignored → 200",
                 rp_logout(port, {"client_id": wid, "ui_locales": "fr", "logout_hint": "alice", "foo": "bar"}), wid)
    resp = rp_logout(port, {"id_token_hint": idt, "post_logout_redirect_uri": BYE, "state": "st-2"}, method="POST")
    confirm_page(res, "RP logout: POST (form body) → the same page", resp, wid, BYE, "st-2")
    page_headers(res, "RP logout: the POST's page", resp)
    confirm_page(res, "RP logout: a cross-site POST (Origin https://evil.example, Sec-Fetch-Site cross-site) → 200, "
                      "it changes nothing",
                 rp_logout(port, {"client_id": wid, "post_logout_redirect_uri": BYE, "state": "st-3"}, method="POST",
                           headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}),
                 wid, BYE, "st-3")
    resp = rp_logout(port, {"client_id": wid, "post_logout_redirect_uri": BYE, "state": ODD_STATE})
    confirm_page(res, "RP logout: a state with \" < > & ' round-trips through the form", resp, wid, BYE, ODD_STATE)
    res.check("RP logout: ... HTML-escaped in the page (no raw <zq>)", b"<zq>" not in resp[2], show(resp))

    # 400 pages
    rp_error(res, "RP logout: post_logout_redirect_uri with neither client_id nor id_token_hint → 400 page",
             rp_logout(port, {"post_logout_redirect_uri": BYE}))
    rp_error(res, "RP logout: ... by POST too → 400 page", rp_logout(port, {"post_logout_redirect_uri": BYE}, method="POST"))
    for uri, why in ((CB, "only a redirect_uri"), (BYE + "/", "a trailing slash"),
                     ("https://app.example/bye?x=2", "another query"), (BYE_Q + "&y=2", "a longer query"),
                     (BYE + "?", "an empty query"), ("https://app.example/BYE", "another case"),
                     ("http://app.example/bye", "http"), ("https://app.example:443/bye", "an explicit port"),
                     (OTHER_BYE, "web2's"), (BYE + "#f", "a fragment"), (EVIL_BYE, "unregistered")):
        rp_error(res, "RP logout: post_logout_redirect_uri %s (%s) for web → 400 page" % (uri, why),
                 rp_logout(port, {"client_id": wid, "post_logout_redirect_uri": uri}))
    rp_error(res, "RP logout: web's hint with web2's URI (not web's) → 400 page",
             rp_logout(port, {"id_token_hint": idt, "post_logout_redirect_uri": OTHER_BYE}))
    rp_error(res, "RP logout: client_id web2 with a hint for web (§2: they must match) → 400 page",
             rp_logout(port, {"id_token_hint": idt, "client_id": w2id}))
    rp_error(res, "RP logout: ... even with web2's registered URI → 400 page",
             rp_logout(port, {"id_token_hint": idt, "client_id": w2id, "post_logout_redirect_uri": OTHER_BYE}))
    rp_error(res, "RP logout: an unknown client_id with a URI → 400 page",
             rp_logout(port, {"client_id": "no-such-client", "post_logout_redirect_uri": BYE}))
    rp_error(res, "RP logout: an unknown client_id → 400 page", rp_logout(port, {"client_id": "no-such-client"}))
    rp_error(res, "RP logout: another tenant's client_id → 400 page",
             rp_logout(port, {"client_id": env.clients["beta"]["client_id"]}))
    for label, hint in (("an access token (typ at+jwt)", at), ("another tenant's ID token (beta)", beta_idt),
                        ("an ID token whose payload was changed (aud → web2), signature kept", with_aud(idt, w2id)),
                        ("an ID token whose signature was changed", flip_sig(idt)),
                        ("the ID token's claims unsigned (alg none)", alg_none(idt)),
                        ("garbage (not.a.jwt)", "not.a.jwt")):
        rp_error(res, "RP logout: id_token_hint %s → 400 page" % label, rp_logout(port, {"id_token_hint": hint}))
    rp_error(res, "RP logout: a changed hint by POST → 400 page",
             rp_logout(port, {"id_token_hint": flip_sig(idt), "post_logout_redirect_uri": BYE}, method="POST"))
    full = [("id_token_hint", idt), ("client_id", wid), ("post_logout_redirect_uri", BYE), ("state", "st")]
    for name, val in full:
        twice = [(name, val), (name, val)] + [(k, v) for k, v in full if k != name]
        rp_error(res, "RP logout: %s given twice (same value) → 400 page" % name, rp_logout(port, twice))
    rp_error(res, "RP logout: state given twice by POST → 400 page",
             rp_logout(port, [("client_id", wid), ("state", "a"), ("state", "b")], method="POST"))

    # neither GET nor POST of /oauth2/logout changes anything
    sso, code = browser_login(res, port, web, "RP logout: nothing changes")
    s = session(res, port, web, code, "RP logout: nothing changes")
    for method in ("GET", "POST"):
        confirm_page(res, "RP logout: %s with the browser's cookie → the page, the cookie untouched" % method,
                     rp_logout(port, {"id_token_hint": s["idt"], "post_logout_redirect_uri": BYE, "state": "k"},
                               method=method, headers={"Cookie": "tessera_sso=" + sso, "Origin": ORIGIN}),
                     wid, BYE, "k")
    sso_code(res, "RP logout: ... afterwards the browser session still answers /authorize with a code",
             sso_authorize(port, web, sso))
    n = revoked(env, sso[3:39], s["sid"])
    res.check("RP logout: ... neither the browser session nor its app session revoked", n == "0", n)
    alive(res, "RP logout: ... the app session", port, web, s)

    # an expired ID token is still a hint (§4)
    exp = jwt_claims(short_idt).get("exp") or 0
    wait = exp + 1 - time.time()
    if wait > EXPIRED_WAIT_MAX_S:
        res.check("RP logout: the short client's ID token expires within %.0f s" % EXPIRED_WAIT_MAX_S, False,
                  "exp in %.1f s" % wait)
        return
    if wait > 0:
        time.sleep(wait)
    confirm_page(res, "RP logout: an expired ID token as hint → 200, client_id from its aud",
                 rp_logout(port, {"id_token_hint": short_idt}), short["client_id"])
    res.check("RP logout: ... that ID token had indeed expired (exp < now)", 0 < exp < time.time(), repr(exp))


# ---------------------------------------------------------------------------- SSO logout

def test_sso_logout(res, env, port):
    web, web2, app = env.clients["web"], env.clients["web2"], env.clients["app"]
    wid, w2id = web["client_id"], web2["client_id"]
    uid = env.users["alice"]
    # browser A: the login page's login (web), then a silent authorization (web2)
    sso_a, code = browser_login(res, port, web, "SSO logout A")
    sid_a = sso_a[3:39]
    s1 = session(res, port, web, code, "SSO logout A, web")
    page_q = ("SELECT count(*) FROM audit_log WHERE action = 'login_succeeded' AND actor_id = '%s' AND target_kind = "
              "'session' AND target_id = '%s' AND details->>'flow' = 'authorization_code' AND details->>'client_id' = "
              "'%s'" % (uid, sid_a, wid))
    res.check("SSO audit: the login page's login → login_succeeded, flow authorization_code, target the browser session",
              wait_for(lambda: env.sql(page_q) == "1", AUDIT_S), env.sql(page_q))
    sso_q = ("SELECT count(*) FROM audit_log WHERE action = 'sso_login' AND actor_kind = 'user' AND actor_id = "
             "'%s' AND target_kind = 'session' AND target_id = '%s' AND "
             "details->>'client_id' = '%s'" % (uid, sid_a, w2id))
    code = sso_code(res, "SSO logout: browser A answers web2's authorization at once",
                    sso_authorize(port, web2, sso_a))
    if code is None:
        return
    s2 = session(res, port, web2, code, "SSO logout A, web2")
    res.check("SSO audit: the silent authorization → sso_login, actor user alice, target session = the browser "
              "session, client_id web2", wait_for(lambda: env.sql(sso_q) == "1", AUDIT_S), env.sql(sso_q))
    pending = sso_code(res, "SSO logout: browser A answers another authorization (its code kept)",
                       sso_authorize(port, web, sso_a))
    # the same user elsewhere: the JSON login API and another browser
    j = api_session(res, env, port, "SSO logout J")
    sso_b, code = browser_login(res, port, web, "SSO logout B")
    sb = session(res, port, web, code, "SSO logout B")

    # a tampered form, a cross-site post: 400 / 403 and nothing ended
    for label, fields in (("web2's URI for client web", {"client_id": wid, "post_logout_redirect_uri": OTHER_BYE}),
                          ("web's redirect_uri (not a post-logout one)", {"client_id": wid,
                                                                          "post_logout_redirect_uri": CB}),
                          ("an unregistered URI", {"client_id": wid, "post_logout_redirect_uri": EVIL_BYE}),
                          ("an unknown client_id", {"client_id": "no-such-client", "post_logout_redirect_uri": BYE})):
        r = sso_logout(port, sso_a, dict(fields, state="st"))
        res.check("SSO logout: POST /logout with %s (a tampered form) → 400 page, no redirect" % label,
                  r[0] == 400 and is_html(r[1]) and hdr(r[1], "location") is None, show(r))
    good = {"client_id": wid, "post_logout_redirect_uri": BYE, "state": "st"}
    for label, kw in (("Origin https://evil.example", dict(origin="https://evil.example")),
                      ("Sec-Fetch-Site: cross-site", dict(extra={"Sec-Fetch-Site": "cross-site"})),
                      ("Origin null without Sec-Fetch-Site", dict(origin="null")),
                      ("Origin null, Sec-Fetch-Site: cross-site", dict(origin="null",
                                                                      extra={"Sec-Fetch-Site": "cross-site"}))):
        r = sso_logout(port, sso_a, good, **kw)
        res.check("SSO logout: a cross-site POST /logout (%s) with a valid redirect → 403, no redirect" % label,
                  r[0] == 403 and hdr(r[1], "location") is None, show(r))
    sso_code(res, "SSO logout: ... after those, browser A still answers /authorize", sso_authorize(port, web, sso_a))
    n = revoked(env, sid_a, s1["sid"], s2["sid"])
    res.check("SSO logout: ... and nothing of browser A's is revoked", n == "0", n)
    alive(res, "SSO logout: ... web's session of browser A", port, web, s1)

    # the RP's logout request, its confirmation page's form posted with the cookie
    conf = rp_logout(port, {"id_token_hint": s1["idt"], "post_logout_redirect_uri": BYE, "state": ODD_STATE},
                     headers={"Cookie": "tessera_sso=" + sso_a})
    page = confirm_page(res, "SSO logout: the RP's request (hint, URI, odd state) → the confirmation page", conf,
                        wid, BYE, ODD_STATE)
    # as a browser posts it from a page with Referrer-Policy: no-referrer (Fetch §3.1)
    out = sso_logout(port, sso_a, form_fields(page), origin="null", extra={"Sec-Fetch-Site": "same-origin"})
    loc = hdr(out[1], "location")
    q = redirect_query(loc, BYE)
    res.check("SSO logout: the page's form posted (Origin null, Sec-Fetch-Site same-origin) → 303 to the "
              "post_logout_redirect_uri ?state=<the state, URL-encoded>",
              out[0] == 303 and q == {"state": [ODD_STATE]} and not re.search(r"[\s\"<>]", loc or ""), show(out))
    res.check("SSO logout: ... Cache-Control: no-store", (hdr(out[1], "cache-control") or "").lower() == "no-store",
              repr(hdr(out[1], "cache-control")))
    res.check("SSO logout: ... the cookie cleared (tessera_sso=; Max-Age=0)", cleared(out[1]),
              repr([v for k, v in out[1] if k == "set-cookie"]))
    res.check("SSO logout: ... browser A's cookie now gets the login page", Page(sso_authorize(port, web, sso_a)).ok())
    ended(res, "SSO logout: the login page's web session", env, port, web, s1)
    ended(res, "SSO logout: the silent web2 session", env, port, web2, s2)
    n = revoked(env, sid_a, s1["sid"], s2["sid"])
    res.check("SSO logout: the browser session and both app sessions revoked (database)", n == "3", n)
    alive(res, "SSO logout: the JSON login API's session survives", port, app, j)
    alive(res, "SSO logout: browser B's web session survives", port, web, sb)
    sso_code(res, "SSO logout: browser B's cookie still answers /authorize", sso_authorize(port, web, sso_b))
    if pending:
        bad = redeem(port, web, pending)
        res.check("SSO logout: a code browser A answered silently, redeemed after its logout → 400 invalid_grant",
                  bad[0] == 400 and oerr(bad) == "invalid_grant", "%s %r" % (bad[0], bad[2]))
    audit = logout_audit(env, sid_a)
    res.check("SSO logout: the audit row (logout, target the browser session): sessions '2', browser 'true'",
              audit == "2|true", repr(audit))

    # browser B signs out without a redirect
    out = sso_logout(port, sso_b)
    res.check("SSO logout: without post_logout_redirect_uri → the 200 'Signed out' page, the cookie cleared",
              out[0] == 200 and is_html(out[1]) and hdr(out[1], "location") is None and cleared(out[1])
              and b"signed out" in out[2].lower(), show(out))
    ended(res, "SSO logout B: browser B's web session", env, port, web, sb)
    alive(res, "SSO logout B: the JSON login API's session still", port, app, j)
    audit = logout_audit(env, sso_b[3:39])
    res.check("SSO logout B: the audit row: sessions '1', browser 'true'", audit == "1|true", repr(audit))

    # no cookie: the redirect all the same
    out = sso_logout(port, None, {"client_id": wid, "post_logout_redirect_uri": BYE_Q, "state": "a b&c"})
    q = redirect_query(hdr(out[1], "location"), BYE_Q)
    res.check("SSO logout: no cookie, a registered URI with a query → 303 to it, state appended with &",
              out[0] == 303 and q == {"x": ["1"], "state": ["a b&c"]}, show(out))
    out = sso_logout(port, None, {"client_id": w2id, "post_logout_redirect_uri": OTHER_BYE})
    res.check("SSO logout: no cookie, no state → 303 to the URI exactly",
              out[0] == 303 and hdr(out[1], "location") == OTHER_BYE, show(out))


def test_codes(res, env, port):
    """A code whose browser session ended before its redemption issues nothing."""
    web = env.clients["web"]
    sso, code = browser_login(res, port, web, "SSO logout: page code")
    out = sso_logout(port, sso)
    res.check("SSO logout: the browser that just logged in logs out → 200", out[0] == 200, show(out))
    bad = redeem(port, web, code)
    res.check("SSO logout: the login page's code, its browser session logged out before redemption → 400 invalid_grant",
              bad[0] == 400 and oerr(bad) == "invalid_grant", "%s %r" % (bad[0], bad[2]))
    audit = logout_audit(env, sso[3:39])
    res.check("SSO logout: ... its audit row: sessions '0', browser 'true'", audit == "0|true", repr(audit))
    # The sweep (STORE_SSO_SWEEP): an app session that a redemption racing the logout committed
    # after the logout's snapshot (made here by undoing its revocation) is ended by the sweep
    # that follows every logout, a repeated one included.
    sso, code = browser_login(res, port, web, "SSO sweep")
    s = session(res, port, web, code, "SSO sweep")
    out = sso_logout(port, sso)
    res.check("SSO sweep: the logout → 200", out[0] == 200, show(out))
    env.sql("UPDATE sessions SET revoked_at = NULL WHERE id = '%s'" % s["sid"])
    out = sso_logout(port, sso)
    res.check("SSO sweep: the same cookie's logout again → 200", out[0] == 200, show(out))
    gone = env.sql("SELECT revoked_at IS NOT NULL FROM sessions WHERE id = '%s'" % s["sid"])
    res.check("SSO sweep: the escaped app session is ended by the sweep (database)", gone == "t", gone)
    r = refresh(port, web, s["rt"])
    res.check("SSO sweep: ... its refresh token → 400 invalid_grant", r[0] == 400 and oerr(r) == "invalid_grant",
              "%s %r" % (r[0], r[2]))
    n = env.sql("SELECT count(*) FROM revocations WHERE kind = 'sid' AND value = '%s'" % s["sid"])
    res.check("SSO sweep: ... with a 'sid' revocation of its own (two: the logout's and the sweep's)", n == "2", n)


def test_relogin(res, env, port):
    web = env.clients["web"]
    sso_c, code = browser_login(res, port, web, "SSO re-login C")
    c1 = session(res, port, web, code, "SSO re-login C")
    pending = sso_code(res, "SSO re-login: browser C answers a second tab's authorization (its code kept)",
                       sso_authorize(port, web, sso_c))
    sso_c2, code = browser_login(res, port, web, "SSO re-login C2", sso=sso_c)
    res.check("SSO re-login: the same user's login with the cookie renews the browser session: a new cookie, the same "
              "session id (its applications keep their link)",
              sso_c2 != sso_c and sso_c2[3:39] == sso_c[3:39], "%r vs %r" % (sso_c2, sso_c))
    c2 = session(res, port, web, code, "SSO re-login C2")
    # the second tab's code, redeemed after the re-login (session raises when it is refused)
    c3 = session(res, port, web, pending, "SSO re-login: the second tab's code after the re-login") if pending else None
    error_redirect(res, "SSO re-login: the old cookie no longer answers (prompt=none → login_required)",
                   sso_authorize(port, web, sso_c, prompt="none"), CB, "login_required")
    sso_code(res, "SSO re-login: the new cookie answers /authorize", sso_authorize(port, web, sso_c2))
    alive(res, "SSO re-login: the old browser session's app session (before any logout)", port, web, c1)
    out = sso_logout(port, sso_c2)
    res.check("SSO re-login: the new browser session logs out → 200, cookie cleared", out[0] == 200 and cleared(out[1]),
              show(out))
    ended(res, "SSO re-login: the app session made under the OLD browser session", env, port, web, c1)
    ended(res, "SSO re-login: the app session made under the new one", env, port, web, c2)
    if c3:
        ended(res, "SSO re-login: the second tab's app session", env, port, web, c3)
    audit = logout_audit(env, sso_c2[3:39])
    want = "3|true" if c3 else "2|true"
    res.check("SSO re-login: the logout's audit row counts every app session: sessions %r, browser 'true'"
              % want.split("|")[0], audit == want, repr(audit))
    # another user logs in on the same browser
    sso_d, _ = browser_login(res, port, web, "SSO re-login D")
    sso_d2, _ = browser_login(res, port, web, "SSO re-login D as bob", username="bob", sso=sso_d)
    res.check("SSO re-login: another user's login with the cookie sets a new tessera_sso",
              sso_d2 != sso_d and sso_d2[3:39] != sso_d[3:39])
    error_redirect(res, "SSO re-login: ... the old (alice's) cookie → login_required at prompt=none",
                   sso_authorize(port, web, sso_d, prompt="none"), CB, "login_required")
    code = sso_code(res, "SSO re-login: ... the new cookie answers /authorize", sso_authorize(port, web, sso_d2))
    if code:
        d = session(res, port, web, code, "SSO re-login D2")
        res.check("SSO re-login: ... as bob (the ID token's sub)", jwt_claims(d["idt"] or "x.e30.x").get("sub")
                  == env.users["bob"], repr(jwt_claims(d["idt"] or "x.e30.x")))


def test_hint_logout(res, env, port):
    """RP-Initiated Logout §2 from a browser without the cookie (another browser, or the cookie
    gone): the verified id_token_hint's own session ends, and nothing else."""
    web, web2 = env.clients["web"], env.clients["web2"]
    wid = web["client_id"]
    sso, code = browser_login(res, port, web, "hint logout")
    s = session(res, port, web, code, "hint logout")
    code2 = sso_code(res, "hint logout: the browser answers web2 at once", sso_authorize(port, web2, sso))
    s2 = session(res, port, web2, code2, "hint logout, web2") if code2 else None
    conf = rp_logout(port, {"id_token_hint": s["idt"], "post_logout_redirect_uri": BYE, "state": "h1"})
    page = confirm_page(res, "hint logout: no cookie, the hint and a URI → the confirmation page", conf, wid, BYE, "h1")
    res.check("hint logout: ... its form carries the verified hint", hidden(page, "id_token_hint") == s["idt"],
              repr(hidden(page, "id_token_hint"))[:80])
    # a hint altered in the form (the post verifies it again) → 400, nothing ended
    forged = [(k, (v[:-3] + ("AAA" if v[-3:] != "AAA" else "BBB")) if k == "id_token_hint" else v)
              for k, v in form_fields(page)]
    bad = sso_logout(port, None, forged, origin="null", extra={"Sec-Fetch-Site": "same-origin"})
    res.check("hint logout: the form posted with an altered hint → 400 page, no redirect",
              bad[0] == 400 and is_html(bad[1]) and hdr(bad[1], "location") is None, show(bad))
    alive(res, "hint logout: ... the hint's session", port, web, s)
    out = sso_logout(port, None, form_fields(page), origin="null", extra={"Sec-Fetch-Site": "same-origin"})
    q = redirect_query(hdr(out[1], "location"), BYE)
    res.check("hint logout: the form posted without a cookie → 303 to the URI with state",
              out[0] == 303 and q == {"state": ["h1"]}, show(out))
    ended(res, "hint logout: the hint's session", env, port, web, s)
    if s2:
        alive(res, "hint logout: the browser's other application session (web2)", port, web2, s2)
    sso_code(res, "hint logout: the browser session itself still answers /authorize", sso_authorize(port, web, sso))
    q = ("SELECT (details->>'hinted') || '|' || (details->>'browser') || '|' || (details->>'sessions') FROM audit_log "
         "WHERE action = 'logout' AND target_id = '%s'" % s["sid"])
    res.check("hint logout: the audit row names the hint's session: hinted, not the browser's, 1 session",
              wait_for(lambda: env.sql(q) == "true|false|1", AUDIT_S), env.sql(q))
    again = sso_logout(port, None, form_fields(page), origin="null", extra={"Sec-Fetch-Site": "same-origin"})
    res.check("hint logout: the same form again → 303 all the same (nothing left to end)", again[0] == 303, show(again))


# ---------------------------------------------------------------------------- main

def run_all(res, env):
    setup(env)
    res.run("admin CLI", test_cli, res, env)
    live = Live(env)
    groups = (("discovery", test_discovery), ("RP logout", test_rp_logout), ("SSO logout", test_sso_logout),
              ("SSO logout: codes", test_codes), ("SSO re-login", test_relogin), ("hint logout", test_hint_logout))
    for name, fn in groups:
        port = live.port(res, name)
        res.run(name, fn, res, env, port)
    live.port(res, "the end")
    check_clean_exit(res, live.srv)
    if live.srv.returncode != 0:
        print("server stderr tail:\n" + live.srv.stderr_text()[-4000:], flush=True)


def main():
    run_with_env("RP-initiated logout and the browser's logout of its applications", "logout", run_all)


if __name__ == "__main__":
    main()
