#!/usr/bin/env python3
"""A user's own profile and sessions (issue 6), with the user's access token (auth/session.c):
GET/PATCH /t/{tenant}/api/v1/me, GET /t/{tenant}/api/v1/me/sessions and
DELETE /t/{tenant}/api/v1/me/sessions/{id}.

- GET /me: alice's profile (id = the token's sub, username, email, email_verified), no hash,
  no-store; PATCH /me: a new email is stored as given, unverified, and audited, a new
  username is taken, bob's username (any case) is 409 and changes nothing, "" removes the email,
  a body with nothing to change, a bad address, a non-JSON body: 400; a disabled user: 404;

- alice logs in three times (three user agents): the list holds exactly those three sessions,
  newest first, with their user agents, the address, the client, and `current` true only for the
  session of the token asking; no refresh-token digest or secret appears; Cache-Control no-store;
- bob's list holds only bob's session (a user never sees another's);
- DELETE of one of alice's other sessions: 204; its access token is refused at /verify at once,
  its refresh token is invalid_grant, the list no longer holds it, the asking session still works,
  an audit row `session_revoked` names it;
- DELETE of bob's session with alice's token: 404, and bob's token still verifies (a user cannot
  revoke another's session, nor plant a 'sid' revocation for it); an id that is not a UUID: 404;
  a session already revoked: 404;
- no token, a garbage token, a client's own token (no session): 401, 401, 400;
- POST /me/password (auth/reauth.c): a wrong current password 403, a common or too short
  new one, the same one, a missing member 400, no token 401; then 204: every other session's
  access token refused at once and its refresh token invalid_grant, the asking session kept
  (its access token verifies, its refresh token refreshes), the old password refused at login and
  the new one accepted, an audit row password_changed counting the revoked session;
- RFC 7662 for refresh tokens (auth/introspect.c): the session's own client (allowed to
  introspect) gets active:true with token_type refresh_token, sub, client_id, sid, scope, exp, iat;
  after a rotation the old token is inactive and the new one active; another client's question
  (O34), a tampered secret (a canonical one, and one whose last character sets bits that must be
  zero), and the token after logout: {"active": false} and nothing else.
Skips when Postgres is not installed.
"""
import json
import urllib.parse

from tessera_harness import check_clean_exit
from test_login import (PASSWORD, TENANT, basic, call, good_login, hdr, jbody, login, run_with_env, sid_of,
                        verify)

AGENTS = ("phone/1.0", "laptop/2.0", "tablet/3.0")
SESSIONS = "/t/%s/api/v1/me/sessions" % TENANT
ME = "/t/%s/api/v1/me" % TENANT


def me(port, token, method="GET", body=None, content_type="application/json"):
    headers = {"Authorization": "Bearer " + token}
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    status, headers, raw = call(port, method, ME, data, headers)
    return status, headers, jbody(raw), raw


def sessions(port, token):
    status, headers, data = call(port, "GET", SESSIONS, headers={"Authorization": "Bearer " + token})
    return status, headers, jbody(data), data


def delete(port, token, sid):
    return call(port, "DELETE", "%s/%s" % (SESSIONS, sid), headers={"Authorization": "Bearer " + token})[0]


def refresh(port, env, refresh_token):
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    status, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, urllib.parse.urlencode(form),
                           {"Content-Type": "application/x-www-form-urlencoded",
                            "Authorization": basic(env.clients["app"])})
    return status, jbody(data)


def logins(res, env, port, user, agents):
    out = []
    for agent in agents:
        status, _, body = good_login(env, port, user, agent=agent)
        res.check("%s logs in (%s)" % (user, agent), status == 200, repr((status, body)))
        out.append(body)
    return out


def check_list(res, env, port, alice, bob):
    status, headers, body, raw = sessions(port, alice[2]["access_token"])
    listed = body.get("sessions", [])
    ids = [s.get("id") for s in listed]
    want = [sid_of(b["refresh_token"]) for b in reversed(alice)]
    res.check("the list: exactly alice's three sessions, newest first", status == 200 and ids == want,
              "%r %r" % (status, body))
    res.check("... user agents, client, address",
              [s.get("user_agent") for s in listed] == list(reversed(AGENTS)) and
              all(s.get("client_id") == env.clients["app"]["client_id"] and s.get("ip") == "127.0.0.1"
                  and s.get("created_at") and s.get("expires_at") for s in listed), repr(listed))
    res.check("... current only for the asking session",
              [s.get("current") for s in listed] == [True, False, False], repr(listed))
    res.check("... no digest or secret, Cache-Control no-store",
              b"rt_" not in raw and b"sha" not in raw and hdr(headers, "cache-control") == "no-store")
    status, _, body, _ = sessions(port, bob[0]["access_token"])
    res.check("bob's list holds only bob's session",
              status == 200 and [s["id"] for s in body.get("sessions", [])] == [sid_of(bob[0]["refresh_token"])],
              repr(body))


def check_delete(res, env, port, alice, bob):
    asking, victim = alice[2], alice[0]
    victim_sid = sid_of(victim["refresh_token"])
    res.check("DELETE another of alice's sessions: 204", delete(port, asking["access_token"], victim_sid) == 204)
    res.check("... its access token is refused at once", verify(port, victim["access_token"])[0] == 401)
    st, body = refresh(port, env, victim["refresh_token"])
    res.check("... its refresh token is invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              repr((st, body)))
    _, _, body, _ = sessions(port, asking["access_token"])
    res.check("... the list no longer holds it", victim_sid not in [s["id"] for s in body.get("sessions", [])])
    res.check("... the asking session still works", verify(port, asking["access_token"])[0] == 200)
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'session_revoked' AND target_id = '%s' "
                    "AND actor_id = '%s'" % (victim_sid, env.users["alice"]))
    res.check("... an audit row names it", audit.strip() == "1", audit)
    res.check("the same session again: 404", delete(port, asking["access_token"], victim_sid) == 404)
    bob_sid = sid_of(bob[0]["refresh_token"])
    res.check("bob's session with alice's token: 404", delete(port, asking["access_token"], bob_sid) == 404)
    res.check("... bob's token still verifies", verify(port, bob[0]["access_token"])[0] == 200)
    planted = env.sql("SELECT count(*) FROM revocations WHERE kind = 'sid' AND value = '%s'" % bob_sid)
    res.check("... and no revocation was written for it", planted.strip() == "0", planted)
    res.check("an id that is not a UUID: 404", delete(port, asking["access_token"], "not-a-uuid") == 404)


def check_refusals(res, env, port):
    st = call(port, "GET", SESSIONS)[0]
    res.check("no token: 401", st == 401, repr(st))
    st = call(port, "GET", SESSIONS, headers={"Authorization": "Bearer garbage"})[0]
    res.check("a garbage token: 401", st == 401, repr(st))
    form = urllib.parse.urlencode({"grant_type": "client_credentials"})
    st, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, form,
                       {"Content-Type": "application/x-www-form-urlencoded",
                        "Authorization": basic(env.clients["svc"])})
    token = jbody(data).get("access_token", "")
    res.check("a client's own token: 400 (no session)", sessions(port, token)[0] == 400, repr(st))


def check_me(res, env, port, alice, bob):
    token = alice[2]["access_token"]
    status, headers, body, raw = me(port, token)
    res.check("GET /me: alice's profile", status == 200 and body.get("id") == env.users["alice"] and
              body.get("username") == "alice" and body.get("email_verified") is False, repr((status, body)))
    res.check("... no hash, no-store", b"argon2" not in raw and b"password" not in raw and
              hdr(headers, "cache-control") == "no-store")
    env.sql("UPDATE users SET email = 'alice@example.test', email_verified = true WHERE id = '%s'"
            % env.users["alice"])
    status, _, body, _ = me(port, token, "PATCH", {"email": "Alice.New@Example.test"})
    res.check("PATCH /me email: 200, the new address, unverified",
              status == 200 and body.get("email") == "Alice.New@Example.test" and body.get("email_verified") is False,
              repr((status, body)))
    audit = env.sql("SELECT count(*) FROM audit_log WHERE action = 'profile_updated' AND actor_id = '%s'"
                    % env.users["alice"])
    res.check("... audited", audit.strip() == "1", audit)
    status, _, body, _ = me(port, token, "PATCH", {"username": "BOB"})
    res.check("PATCH /me username taken by bob (another case): 409", status == 409, repr((status, body)))
    res.check("... nothing changed", me(port, token)[2].get("username") == "alice")
    env.sql("UPDATE users SET email = 'bob@example.test' WHERE id = '%s'" % env.users["bob"])
    status, _, body, _ = me(port, token, "PATCH", {"email": "BOB@example.test"})
    res.check("PATCH /me email another account holds: 409", status == 409, repr((status, body)))
    status, _, body, _ = me(port, token, "PATCH", {"username": "alice2"})
    res.check("PATCH /me username: 200", status == 200 and body.get("username") == "alice2", repr(body))
    status, _, body, _ = me(port, token, "PATCH", {"email": ""})
    res.check("PATCH /me email \"\": removed", status == 200 and body.get("email") is None, repr(body))
    for label, payload, ctype in (("nothing to change", {}, "application/json"),
                                  ("a bad address", {"email": "not an address"}, "application/json"),
                                  ("a username with surrounding spaces", {"username": " x "}, "application/json"),
                                  ("not JSON", b"username=x", "application/x-www-form-urlencoded")):
        status = me(port, token, "PATCH", payload, ctype)[0]
        res.check("PATCH /me with %s: 400" % label, status == 400, repr(status))
    env.sql("UPDATE users SET disabled = true WHERE id = '%s'" % env.users["bob"])
    res.check("GET /me of a disabled user: 404", me(port, bob[0]["access_token"])[0] == 404)
    env.sql("UPDATE users SET disabled = false WHERE id = '%s'" % env.users["bob"])
    res.check("no token: 401", call(port, "GET", ME)[0] == 401)


def introspect_as(port, client, token):
    status, _, data = call(port, "POST", "/t/%s/oauth2/introspect" % TENANT,
                           urllib.parse.urlencode({"token": token}),
                           {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(client)})
    return status, jbody(data)


def check_refresh_introspection(res, env, port):
    own, other = env.clients["app_i"], env.clients["svc"]
    status, _, body = good_login(env, port, "alice2", client="app_i")
    res.check("alice logs in through an introspecting first-party client", status == 200, repr(body))
    rt = body.get("refresh_token", "")
    st, got = introspect_as(port, own, rt)
    res.check("its own client: active, token_type refresh_token, sub, sid, client_id, scope, exp, iat",
              st == 200 and got.get("active") is True and got.get("token_type") == "refresh_token" and
              got.get("sub") == env.users["alice"] and got.get("sid") == sid_of(rt) and
              got.get("client_id") == own["client_id"] and got.get("scope") == "read write" and
              got.get("exp", 0) > got.get("iat", 0) > 0, repr((st, got)))
    res.check("O34: another client's question: {\"active\": false} only",
              introspect_as(port, other, rt) == (200, {"active": False}))
    middle = len(rt) - 10
    tampered = rt[:middle] + ("A" if rt[middle] != "A" else "B") + rt[middle + 1:]
    got = introspect_as(port, own, tampered)
    res.check("a tampered secret: inactive", got == (200, {"active": False}), repr((tampered[-12:], got)))
    # The last of 43 characters carries 4 bits: 'B' sets one of the 2 that must be zero.
    got = introspect_as(port, own, rt[:-1] + "B")
    res.check("a secret that is not canonical base64url: inactive (not 500)", got == (200, {"active": False}),
              repr(got))
    form = {"grant_type": "refresh_token", "refresh_token": rt}
    st, _, data = call(port, "POST", "/t/%s/oauth2/token" % TENANT, urllib.parse.urlencode(form),
                       {"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic(own)})
    new = jbody(data)
    res.check("rotation: 200", st == 200, repr((st, new)))
    res.check("... the old token inactive", introspect_as(port, own, rt) == (200, {"active": False}))
    res.check("... the new one active", introspect_as(port, own, new.get("refresh_token", ""))[1].get("active") is True)
    call(port, "POST", "/t/%s/api/v1/auth/logout" % TENANT,
         headers={"Authorization": "Bearer " + new.get("access_token", "")})
    res.check("after logout: inactive",
              introspect_as(port, own, new.get("refresh_token", "")) == (200, {"active": False}))


def change_password(port, token, body):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    return call(port, "POST", "/t/%s/api/v1/me/password" % TENANT, json.dumps(body).encode(), headers)[0]


def check_password_change(res, env, port):
    a = good_login(env, port, "carol", agent="a/1")[2]
    b = good_login(env, port, "carol", agent="b/1")[2]
    token = a.get("access_token", "")
    new_password = "a much better passphrase"
    cases = (("a wrong current password: 403", {"current_password": "not it", "new_password": new_password}, 403),
             ("a common new password: 400", {"current_password": PASSWORD, "new_password": "iloveyou"}, 400),
             ("a too short new password: 400", {"current_password": PASSWORD, "new_password": "short"}, 400),
             ("the same password: 400", {"current_password": PASSWORD, "new_password": PASSWORD}, 400),
             ("no current_password: 400", {"new_password": new_password}, 400))
    for label, body, want in cases:
        got = change_password(port, token, body)
        res.check("POST /me/password with %s" % label, got == want, repr(got))
    res.check("POST /me/password without a token: 401",
              change_password(port, None, {"current_password": PASSWORD, "new_password": new_password}) == 401)
    got = change_password(port, token, {"current_password": PASSWORD, "new_password": new_password})
    res.check("POST /me/password: 204", got == 204, repr(got))
    res.check("... the other session's access token is refused", verify(port, b["access_token"])[0] == 401)
    st, body = refresh(port, env, b["refresh_token"])
    res.check("... its refresh token is invalid_grant", st == 400 and body.get("error") == "invalid_grant",
              repr((st, body)))
    res.check("... the asking session's access token still verifies", verify(port, token)[0] == 200)
    res.check("... and its refresh token refreshes", refresh(port, env, a["refresh_token"])[0] == 200)
    res.check("... the old password is refused at login", good_login(env, port, "carol")[0] == 401)
    status = login(port, {"username": "carol", "password": new_password,
                          "client_id": env.clients["app"]["client_id"]})[0]
    res.check("... the new one logs in", status == 200, repr(status))
    audit = env.sql("SELECT details->>'sessions' FROM audit_log WHERE action = 'password_changed' "
                    "AND actor_id = '%s'" % env.users["carol"])
    res.check("... an audit row password_changed, one session revoked", audit.strip() == "1", audit)


def run_all(res, env):
    env.user("alice")
    env.user("bob")
    env.user("carol")
    env.client("app_i", "--first-party", "--grant", "password", "--grant", "refresh_token", "--introspect")
    srv = env.server()
    try:
        alice = logins(res, env, srv.port, "alice", AGENTS)
        bob = logins(res, env, srv.port, "bob", AGENTS[:1])
        check_list(res, env, srv.port, alice, bob)
        check_delete(res, env, srv.port, alice, bob)
        check_refusals(res, env, srv.port)
        check_me(res, env, srv.port, alice, bob)
        check_refresh_introspection(res, env, srv.port)
        check_password_change(res, env, srv.port)
        check_clean_exit(res, srv)
    finally:
        srv.kill()


def main():
    run_with_env("a user's own profile and sessions", 'sessions', run_all)


if __name__ == "__main__":
    main()
