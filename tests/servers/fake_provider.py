#!/usr/bin/env python3
"""A fake of the GitHub REST API and the GitLab REST API v4 for AIDA's
end-to-end tests (Python 3 stdlib only), keeping its state in memory and
recording every request.

The real services cannot be reached from the tests, so this one plays them,
following their documented contracts (request and response shapes, status
codes and error bodies) for the few endpoints AIDA uses:

  docs.github.com/en/rest/pulls/pulls, /rest/issues/issues,
  /rest/issues/comments; docs.gitlab.com/api/merge_requests, /api/notes.

Usage:  fake_provider.py            (no arguments)

Environment:
  FAKE_PROVIDER_TOKEN  the one token both APIs accept (never from argv)

It binds 127.0.0.1 on port 0 and prints `listening on <port>` as its first
line on stdout (flushed). With BASE = http://127.0.0.1:<port>:

GitHub (as https://api.github.com, paths at the root; web links under BASE):
  auth      `Authorization: Bearer <token>` or `token <token>` (or basic with
            the token as password); none: 401 "Requires authentication",
            another token: 401 "Bad credentials". A request without a
            User-Agent gets 403, as on GitHub. Any Accept is taken; answers
            are `application/json; charset=utf-8`; a body that is not a JSON
            object gets 400 "Problems parsing JSON".
  POST   /repos/{owner}/{repo}/pulls            {title, head, base, body, draft}
         201 pull request (Location header); 422 "Validation Failed" with
         code missing_field when title, head or base is missing, with code
         custom "A pull request already exists for owner:head." when an open
         one has the same head and base, "No commits between base and head."
         when they are the same branch; 422 "Invalid request." on a wrong type.
  GET    /repos/{owner}/{repo}/pulls?state=open|closed|all&head=owner:branch&base=
         (head without an owner is ignored, as GitHub ignores it)
  GET    /repos/{owner}/{repo}/pulls/{number}
  PATCH  /repos/{owner}/{repo}/pulls/{number}   {title, body, state}
  GET    /repos/{owner}/{repo}/issues/{number}  (pull requests are issues too)
  POST   /repos/{owner}/{repo}/issues/{number}/comments   {body}  -> 201
  GET    /repos/{owner}/{repo}/issues/{number}/comments
  Issues and pull requests share a repository's numbers; ids are distinct
  from numbers (they start at 100001). Unknown paths and numbers: 404.

GitLab (under BASE/api/v4; {id} is a number or a URL-encoded path such as
group%2Fproject; a path names a project on first use, a number must be one):
  auth      `PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`, else
            401 {"message": "401 Unauthorized"}. Parameters come from the
            query string, a JSON body or a form body, as GitLab takes them.
  POST   /projects/{id}/merge_requests  {source_branch, target_branch, title, description}
         201 merge request, draft when the title starts with "Draft:",
         "[Draft]" or "(Draft)"; 400 {"error": "title is missing"} and the
         like; 409 {"message": ["Another open merge request already exists
         for this source branch: !iid"]} for an open one with the same
         branches.
  GET    /projects/{id}/merge_requests?state=opened|closed|merged|all&source_branch=&target_branch=
  GET    /projects/{id}/merge_requests/{iid}
  PUT    /projects/{id}/merge_requests/{iid}    {title, description, state_event: close|reopen}
  GET    /projects/{id}/issues/{iid}
  POST   /projects/{id}/issues/{iid}/notes          {body} -> 201 note
  GET    /projects/{id}/issues/{iid}/notes
  POST   /projects/{id}/merge_requests/{iid}/notes  {body} -> 201 note
  GET    /projects/{id}/merge_requests/{iid}/notes

Test control (under BASE/_fake, never recorded, no auth):
  GET  /_fake/requests  every recorded API request, oldest first: {seq, api
       ("github" or "gitlab"), method, path, query {name: value}, auth
       {scheme: "bearer"|"token"|"basic"|"private-token"|null, matched},
       headers {accept, content-type, user-agent, ...: never a credential},
       body (JSON, form fields or text), status}
  GET  /_fake/state     pull requests, merge requests, issues, comments, notes
  POST /_fake/issues    {provider: "github"|"gitlab", repo: "owner/repo" or
                        the project path, number, title, body} seeds an issue
  POST /_fake/fail      {status, count, method?, path_contains?}: the next
                        `count` matching API requests get `status` without
                        being handled (a failing proxy or outage)
  POST /_fake/reset     forgets all state and requests
"""

import base64
import hmac
import json
import os
import re
import sys
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

GITHUB_DOCS = "https://docs.github.com/rest"
BOT = "aida-bot"
FIRST_ID = 100001
DRAFT_PREFIX = re.compile(r"^\s*(draft:|\[draft\]|\(draft\))", re.IGNORECASE)
RECORDED_HEADERS = (
    "accept",
    "content-type",
    "user-agent",
    "x-github-api-version",
    "content-encoding",
)


def now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reply:
    """An answer: status, JSON (or text) body, extra headers."""

    def __init__(self, status, body=None, headers=None, text=None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.text = text


class ApiError(Exception):
    def __init__(self, reply):
        super().__init__(reply.status)
        self.reply = reply


def github_error(status, message, **extra):
    body = {"message": message, "documentation_url": GITHUB_DOCS, "status": str(status)}
    body.update(extra)
    return ApiError(Reply(status, body))


def validation_failed(*errors):
    return github_error(422, "Validation Failed", errors=list(errors))


class State:
    """Everything the fake remembers; guarded by `lock`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.requests = []
        self.failures = []
        self.next_id = FIRST_ID
        self.github = {}  # "owner/repo" -> repo dict
        self.gitlab = {}  # project id -> project dict
        self.gitlab_paths = {}  # path -> project id

    def new_id(self):
        self.next_id += 1
        return self.next_id - 1

    def github_repo(self, full_name):
        if full_name not in self.github:
            self.github[full_name] = {"next_number": 1, "pulls": {}, "issues": {}, "comments": {}}
        return self.github[full_name]

    def gitlab_project(self, ref):
        """The project `ref` (a number or a path) names; a path makes one."""
        if ref.isdigit():
            project = self.gitlab.get(int(ref))
            if project is None:
                raise ApiError(Reply(404, {"message": "404 Project Not Found"}))
            return project
        if ref not in self.gitlab_paths:
            pid = self.new_id()
            self.gitlab_paths[ref] = pid
            self.gitlab[pid] = {
                "id": pid,
                "path": ref,
                "next_mr": 1,
                "mrs": {},
                "issues": {},
                "notes": {},
            }
        return self.gitlab[self.gitlab_paths[ref]]

    def take_failure(self, method, path):
        for failure in self.failures:
            if failure.get("method") not in (None, method):
                continue
            if failure.get("path_contains", "") not in path:
                continue
            failure["count"] -= 1
            if failure["count"] <= 0:
                self.failures.remove(failure)
            return failure["status"]
        return None


STATE = State()
CONFIG = {"token": "", "base": ""}


# ---------------------------------------------------------------- GitHub


def github_auth(headers):
    """(scheme, matched) for a GitHub request."""
    value = headers.get("Authorization")
    if not value:
        return None, False
    scheme, _, credential = value.strip().partition(" ")
    scheme = scheme.lower()
    credential = credential.strip()
    if scheme == "basic":
        try:
            credential = base64.b64decode(credential).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            credential = ""
    elif scheme not in ("bearer", "token"):
        return scheme, False
    return scheme, token_matches(credential)


def token_matches(credential):
    return hmac.compare_digest(credential.encode(), CONFIG["token"].encode())


def github_label(owner, ref):
    """`owner:branch` for a head or base given as `branch` or `owner:branch`."""
    return ref if ":" in ref else "%s:%s" % (owner, ref)


def check_types(body, strings, booleans):
    for name in strings:
        if name in body and body[name] is not None and not isinstance(body[name], str):
            raise github_error(
                422, "Invalid request.\n\nFor 'properties/%s', %s is not a string." % (name, json.dumps(body[name]))
            )
    for name in booleans:
        if name in body and not isinstance(body[name], bool):
            raise github_error(
                422, "Invalid request.\n\nFor 'properties/%s', %s is not a boolean." % (name, json.dumps(body[name]))
            )


def require_object(body):
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise github_error(400, "Problems parsing JSON")
    return body


def web(path):
    return CONFIG["base"] + path


def github_pr_view(full_name, pr):
    owner, repo = full_name.split("/", 1)
    api = "%s/repos/%s/pulls/%d" % (CONFIG["base"], full_name, pr["number"])
    html = web("/%s/pull/%d" % (full_name, pr["number"]))
    return {
        "id": pr["id"],
        "node_id": "PR_%d" % pr["id"],
        "number": pr["number"],
        "url": api,
        "html_url": html,
        "issue_url": "%s/repos/%s/issues/%d" % (CONFIG["base"], full_name, pr["number"]),
        "comments_url": "%s/repos/%s/issues/%d/comments" % (CONFIG["base"], full_name, pr["number"]),
        "state": pr["state"],
        "locked": False,
        "title": pr["title"],
        "body": pr["body"],
        "draft": pr["draft"],
        "merged": False,
        "mergeable": None,
        "user": {"login": BOT, "id": 1, "type": "User"},
        "head": ref_view(pr["head"], full_name),
        "base": ref_view(pr["base"], full_name),
        "created_at": pr["created_at"],
        "updated_at": pr["updated_at"],
        "closed_at": pr.get("closed_at"),
        "merged_at": None,
    }


def ref_view(label, full_name):
    owner, _, ref = label.partition(":")
    return {
        "label": label,
        "ref": ref,
        "sha": None,
        "user": {"login": owner},
        "repo": {"full_name": full_name, "name": full_name.split("/", 1)[1]},
    }


def github_issue_view(full_name, number, repo):
    if number in repo["pulls"]:
        pr = repo["pulls"][number]
        view = {"id": pr["id"], "title": pr["title"], "body": pr["body"], "state": pr["state"]}
        view["pull_request"] = {
            "url": "%s/repos/%s/pulls/%d" % (CONFIG["base"], full_name, number),
            "html_url": web("/%s/pull/%d" % (full_name, number)),
        }
        html = web("/%s/pull/%d" % (full_name, number))
    elif number in repo["issues"]:
        issue = repo["issues"][number]
        view = {k: issue[k] for k in ("id", "title", "body", "state")}
        html = web("/%s/issues/%d" % (full_name, number))
    else:
        raise github_error(404, "Not Found")
    view.update(
        {
            "number": number,
            "url": "%s/repos/%s/issues/%d" % (CONFIG["base"], full_name, number),
            "html_url": html,
            "user": {"login": BOT, "id": 1, "type": "User"},
            "labels": [],
            "comments": len(repo["comments"].get(number, [])),
        }
    )
    return view


def github_create_pull(full_name, body):
    body = require_object(body)
    check_types(body, ("title", "head", "base", "body"), ("draft",))
    owner = full_name.split("/", 1)[0]
    for field in ("head", "base", "title"):
        if not body.get(field):
            raise validation_failed({"resource": "PullRequest", "field": field, "code": "missing_field"})
    head, base = github_label(owner, body["head"]), github_label(owner, body["base"])
    if head == base:
        message = "No commits between %s and %s" % (body["base"], body["head"])
        raise validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
    repo = STATE.github_repo(full_name)
    for pr in repo["pulls"].values():
        if pr["state"] == "open" and pr["head"] == head and pr["base"] == base:
            message = "A pull request already exists for %s." % head
            raise validation_failed({"resource": "PullRequest", "code": "custom", "message": message})
    number = repo["next_number"]
    repo["next_number"] += 1
    stamp = now()
    pr = {
        "id": STATE.new_id(),
        "number": number,
        "state": "open",
        "title": body["title"],
        "body": body.get("body"),
        "draft": bool(body.get("draft", False)),
        "head": head,
        "base": base,
        "created_at": stamp,
        "updated_at": stamp,
    }
    repo["pulls"][number] = pr
    view = github_pr_view(full_name, pr)
    return Reply(201, view, {"Location": view["url"]})


def github_list_pulls(full_name, query):
    repo = STATE.github_repo(full_name)
    state = query.get("state", "open")
    if state not in ("open", "closed", "all"):
        raise validation_failed({"resource": "PullRequest", "field": "state", "code": "invalid"})
    head = query.get("head", "")
    pulls = sorted(repo["pulls"].values(), key=lambda p: p["number"], reverse=True)
    chosen = [
        github_pr_view(full_name, pr)
        for pr in pulls
        if state in ("all", pr["state"])
        # GitHub filters on head only in the user:ref-name form.
        and (":" not in head or pr["head"] == head)
        and query.get("base") in (None, pr["base"].partition(":")[2])
    ]
    return Reply(200, chosen)


def github_pull(full_name, number):
    pr = STATE.github_repo(full_name)["pulls"].get(number)
    if pr is None:
        raise github_error(404, "Not Found")
    return pr


def github_update_pull(full_name, number, body):
    body = require_object(body)
    check_types(body, ("title", "body", "state"), ())
    pr = github_pull(full_name, number)
    if body.get("state") not in (None, "open", "closed"):
        raise validation_failed({"resource": "PullRequest", "field": "state", "code": "invalid"})
    for field in ("title", "body", "state"):
        if field in body:
            pr[field] = body[field]
    pr["updated_at"] = now()
    pr["closed_at"] = pr["updated_at"] if pr["state"] == "closed" else None
    return Reply(200, github_pr_view(full_name, pr))


def github_comment_view(full_name, number, repo, comment):
    kind = "pull" if number in repo["pulls"] else "issues"
    return {
        "id": comment["id"],
        "node_id": "IC_%d" % comment["id"],
        "url": "%s/repos/%s/issues/comments/%d" % (CONFIG["base"], full_name, comment["id"]),
        "html_url": web("/%s/%s/%d#issuecomment-%d" % (full_name, kind, number, comment["id"])),
        "issue_url": "%s/repos/%s/issues/%d" % (CONFIG["base"], full_name, number),
        "body": comment["body"],
        "user": {"login": BOT, "id": 1, "type": "User"},
        "author_association": "OWNER",
        "created_at": comment["created_at"],
        "updated_at": comment["created_at"],
    }


def github_add_comment(full_name, number, body):
    body = require_object(body)
    check_types(body, ("body",), ())
    repo = STATE.github_repo(full_name)
    github_issue_view(full_name, number, repo)  # 404 unless it exists
    if not body.get("body"):
        raise validation_failed({"resource": "IssueComment", "field": "body", "code": "missing_field"})
    comment = {"id": STATE.new_id(), "body": body["body"], "created_at": now()}
    repo["comments"].setdefault(number, []).append(comment)
    view = github_comment_view(full_name, number, repo, comment)
    return Reply(201, view, {"Location": view["url"]})


def github_comments(full_name, number):
    repo = STATE.github_repo(full_name)
    github_issue_view(full_name, number, repo)
    return Reply(
        200, [github_comment_view(full_name, number, repo, c) for c in repo["comments"].get(number, [])]
    )


GITHUB_REPO = r"/repos/(?P<repo>[^/]+/[^/]+)"
GITHUB_ROUTES = [
    ("POST", GITHUB_REPO + r"/pulls", lambda m, q, b: github_create_pull(m["repo"], b)),
    ("GET", GITHUB_REPO + r"/pulls", lambda m, q, b: github_list_pulls(m["repo"], q)),
    (
        "GET",
        GITHUB_REPO + r"/pulls/(?P<n>\d+)",
        lambda m, q, b: Reply(200, github_pr_view(m["repo"], github_pull(m["repo"], int(m["n"])))),
    ),
    ("PATCH", GITHUB_REPO + r"/pulls/(?P<n>\d+)", lambda m, q, b: github_update_pull(m["repo"], int(m["n"]), b)),
    (
        "GET",
        GITHUB_REPO + r"/issues/(?P<n>\d+)",
        lambda m, q, b: Reply(200, github_issue_view(m["repo"], int(m["n"]), STATE.github_repo(m["repo"]))),
    ),
    (
        "POST",
        GITHUB_REPO + r"/issues/(?P<n>\d+)/comments",
        lambda m, q, b: github_add_comment(m["repo"], int(m["n"]), b),
    ),
    ("GET", GITHUB_REPO + r"/issues/(?P<n>\d+)/comments", lambda m, q, b: github_comments(m["repo"], int(m["n"]))),
]


def handle_github(method, path, query, body, headers, record):
    if not headers.get("User-Agent"):
        message = (
            "Request forbidden by administrative rules. Please make sure your request "
            "has a User-Agent header (https://docs.github.com/en/rest/overview/"
            "resources-in-the-rest-api#user-agent-required)."
        )
        return Reply(403, text=message)
    scheme, matched = github_auth(headers)
    record["auth"] = {"scheme": scheme, "matched": matched}
    if scheme is None:
        raise github_error(401, "Requires authentication")
    if not matched:
        raise github_error(401, "Bad credentials")
    if isinstance(body, ParseError):
        raise github_error(400, "Problems parsing JSON")
    return route(GITHUB_ROUTES, method, path, query, body, lambda: github_error(404, "Not Found"))


# ---------------------------------------------------------------- GitLab


def gitlab_auth(headers):
    private = headers.get("PRIVATE-TOKEN")
    if private is not None:
        return "private-token", token_matches(private.strip())
    value = headers.get("Authorization")
    if not value:
        return None, False
    scheme, _, credential = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return scheme.lower(), False
    return "bearer", token_matches(credential.strip())


def gitlab_error(status, message):
    return ApiError(Reply(status, {"message": message}))


def require_params(params, names):
    missing = [n for n in names if not params.get(n)]
    if missing:
        raise ApiError(Reply(400, {"error": ", ".join("%s is missing" % n for n in missing)}))


def gitlab_user():
    return {"id": 1, "username": BOT, "name": "AIDA bot", "state": "active"}


def gitlab_mr_view(project, mr):
    return {
        "id": mr["id"],
        "iid": mr["iid"],
        "project_id": project["id"],
        "source_project_id": project["id"],
        "target_project_id": project["id"],
        "title": mr["title"],
        "description": mr["description"],
        "state": mr["state"],
        "draft": bool(DRAFT_PREFIX.match(mr["title"])),
        "work_in_progress": bool(DRAFT_PREFIX.match(mr["title"])),
        "source_branch": mr["source_branch"],
        "target_branch": mr["target_branch"],
        "author": gitlab_user(),
        "merge_status": "can_be_merged",
        "detailed_merge_status": "mergeable",
        "sha": None,
        "created_at": mr["created_at"],
        "updated_at": mr["updated_at"],
        "closed_at": mr.get("closed_at"),
        "references": {
            "short": "!%d" % mr["iid"],
            "relative": "!%d" % mr["iid"],
            "full": "%s!%d" % (project["path"], mr["iid"]),
        },
        "web_url": web("/%s/-/merge_requests/%d" % (project["path"], mr["iid"])),
    }


def gitlab_create_mr(project, params):
    require_params(params, ("source_branch", "target_branch", "title"))
    source, target = params["source_branch"], params["target_branch"]
    if source == target:
        raise gitlab_error(409, ["You can't use same project/branch for source and target"])
    for mr in project["mrs"].values():
        if mr["state"] == "opened" and mr["source_branch"] == source and mr["target_branch"] == target:
            message = "Another open merge request already exists for this source branch: !%d" % mr["iid"]
            raise gitlab_error(409, [message])
    iid = project["next_mr"]
    project["next_mr"] += 1
    stamp = now()
    mr = {
        "id": STATE.new_id(),
        "iid": iid,
        "title": params["title"],
        "description": params.get("description"),
        "state": "opened",
        "source_branch": source,
        "target_branch": target,
        "created_at": stamp,
        "updated_at": stamp,
    }
    project["mrs"][iid] = mr
    return Reply(201, gitlab_mr_view(project, mr))


def gitlab_list_mrs(project, params):
    state = params.get("state", "all")
    mrs = sorted(project["mrs"].values(), key=lambda m: m["iid"], reverse=True)
    return Reply(
        200,
        [
            gitlab_mr_view(project, mr)
            for mr in mrs
            if state in ("all", mr["state"])
            and params.get("source_branch") in (None, mr["source_branch"])
            and params.get("target_branch") in (None, mr["target_branch"])
        ],
    )


def gitlab_mr(project, iid):
    mr = project["mrs"].get(iid)
    if mr is None:
        raise gitlab_error(404, "404 Not found")
    return mr


def gitlab_update_mr(project, iid, params):
    mr = gitlab_mr(project, iid)
    for field in ("title", "description"):
        if field in params:
            mr[field] = params[field]
    event = params.get("state_event")
    if event == "close":
        mr["state"], mr["closed_at"] = "closed", now()
    elif event == "reopen":
        mr["state"], mr["closed_at"] = "opened", None
    mr["updated_at"] = now()
    return Reply(200, gitlab_mr_view(project, mr))


def gitlab_issue(project, iid):
    issue = project["issues"].get(iid)
    if issue is None:
        raise gitlab_error(404, "404 Issue Not Found")
    view = dict(issue)
    view["project_id"] = project["id"]
    view["description"] = issue["body"]
    view["web_url"] = web("/%s/-/issues/%d" % (project["path"], iid))
    view["author"] = gitlab_user()
    return view


def gitlab_noteable(project, kind, iid):
    """Checks the issue or merge request exists; returns its global id."""
    if kind == "issues":
        return gitlab_issue(project, iid)["id"]
    return gitlab_mr(project, iid)["id"]


def gitlab_note_view(project, kind, iid, note):
    return {
        "id": note["id"],
        "type": None,
        "body": note["body"],
        "author": gitlab_user(),
        "created_at": note["created_at"],
        "updated_at": note["created_at"],
        "system": False,
        "noteable_id": note["noteable_id"],
        "noteable_type": "Issue" if kind == "issues" else "MergeRequest",
        "noteable_iid": iid,
        "project_id": project["id"],
        "resolvable": False,
        "confidential": False,
        "internal": False,
    }


def gitlab_add_note(project, kind, iid, params):
    noteable_id = gitlab_noteable(project, kind, iid)
    require_params(params, ("body",))
    note = {"id": STATE.new_id(), "body": params["body"], "created_at": now(), "noteable_id": noteable_id}
    project["notes"].setdefault("%s/%d" % (kind, iid), []).append(note)
    return Reply(201, gitlab_note_view(project, kind, iid, note))


def gitlab_notes(project, kind, iid):
    gitlab_noteable(project, kind, iid)
    notes = project["notes"].get("%s/%d" % (kind, iid), [])
    return Reply(200, [gitlab_note_view(project, kind, iid, n) for n in notes])


def project_of(match):
    # The id arrives URL-encoded (group%2Fproject): decode it here only.
    return STATE.gitlab_project(unquote(match["project"]))


GITLAB_PROJECT = r"/api/v4/projects/(?P<project>[^/]+)"
GITLAB_NOTES = GITLAB_PROJECT + r"/(?P<kind>issues|merge_requests)/(?P<iid>\d+)/notes"
GITLAB_ROUTES = [
    ("POST", GITLAB_PROJECT + r"/merge_requests", lambda m, q, b: gitlab_create_mr(project_of(m), b)),
    ("GET", GITLAB_PROJECT + r"/merge_requests", lambda m, q, b: gitlab_list_mrs(project_of(m), b)),
    (
        "GET",
        GITLAB_PROJECT + r"/merge_requests/(?P<iid>\d+)",
        lambda m, q, b: Reply(200, gitlab_mr_view(project_of(m), gitlab_mr(project_of(m), int(m["iid"])))),
    ),
    (
        "PUT",
        GITLAB_PROJECT + r"/merge_requests/(?P<iid>\d+)",
        lambda m, q, b: gitlab_update_mr(project_of(m), int(m["iid"]), b),
    ),
    (
        "GET",
        GITLAB_PROJECT + r"/issues/(?P<iid>\d+)",
        lambda m, q, b: Reply(200, gitlab_issue(project_of(m), int(m["iid"]))),
    ),
    ("POST", GITLAB_NOTES, lambda m, q, b: gitlab_add_note(project_of(m), m["kind"], int(m["iid"]), b)),
    ("GET", GITLAB_NOTES, lambda m, q, b: gitlab_notes(project_of(m), m["kind"], int(m["iid"]))),
]


def handle_gitlab(method, path, query, body, headers, record):
    scheme, matched = gitlab_auth(headers)
    record["auth"] = {"scheme": scheme, "matched": matched}
    if not matched:
        raise gitlab_error(401, "401 Unauthorized")
    if isinstance(body, ParseError):
        raise ApiError(Reply(400, {"error": "body is not valid JSON"}))
    params = dict(query)
    if isinstance(body, dict):
        params.update({k: v for k, v in body.items()})
    return route(GITLAB_ROUTES, method, path, query, params, lambda: ApiError(Reply(404, {"error": "404 Not Found"})))


# ---------------------------------------------------------------- plumbing


class ParseError(str):
    """A body that should have been JSON and was not (kept as text)."""


def route(routes, method, path, query, body, not_found):
    for verb, pattern, handler in routes:
        match = re.fullmatch(pattern, path)
        if match and verb == method:
            return handler(match, query, body)
    raise not_found()


def parse_body(raw, content_type, forms):
    """JSON, form fields (when `forms`, as GitLab takes them; GitHub reads
    every body as JSON) or the text that failed to parse; None when empty."""
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    if forms and "application/x-www-form-urlencoded" in content_type:
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        return json.loads(text)
    except ValueError:
        return ParseError(text)


def control(method, path, body):
    """The /_fake/ endpoints."""
    try:
        return control_locked(method, path, body)
    except ApiError as e:
        return e.reply


def control_locked(method, path, body):
    with STATE.lock:
        if (method, path) == ("GET", "/_fake/requests"):
            return Reply(200, STATE.requests)
        if (method, path) == ("GET", "/_fake/state"):
            return Reply(200, {"github": STATE.github, "gitlab": list(STATE.gitlab.values())})
        if (method, path) == ("POST", "/_fake/reset"):
            STATE.reset()
            return Reply(200, {})
        if (method, path) == ("POST", "/_fake/issues"):
            return seed_issue(body if isinstance(body, dict) else {})
        if (method, path) == ("POST", "/_fake/fail"):
            return add_failure(body if isinstance(body, dict) else {})
    return Reply(404, {"message": "no such control endpoint"})


def seed_issue(body):
    provider, repo = body.get("provider", "github"), body.get("repo")
    number = body.get("number")
    if not repo or not isinstance(number, int):
        return Reply(400, {"message": "repo and number (an integer) are required"})
    issue = {
        "id": STATE.new_id(),
        "iid": number,
        "number": number,
        "title": body.get("title", ""),
        "body": body.get("body", ""),
        "state": "open" if provider == "github" else "opened",
    }
    if provider == "github":
        target = STATE.github_repo(repo)
        if number in target["issues"] or number in target["pulls"]:
            return Reply(422, {"message": "number %d is taken" % number})
        target["next_number"] = max(target["next_number"], number + 1)
    elif provider == "gitlab":
        target = STATE.gitlab_project(repo)
    else:
        return Reply(400, {"message": "provider is github or gitlab"})
    target["issues"][number] = issue
    return Reply(201, issue)


def add_failure(body):
    if not isinstance(body.get("status"), int):
        return Reply(400, {"message": "status (an integer) is required"})
    failure = {
        "status": body["status"],
        "count": int(body.get("count", 1)),
        "method": body.get("method"),
        "path_contains": body.get("path_contains", ""),
    }
    STATE.failures.append(failure)
    return Reply(201, failure)


def api_call(method, path, query, body, headers):
    """Answers one API request, recording it (before the answer leaves)."""
    api = "gitlab" if path.startswith("/api/v4/") else "github"
    record = {
        "api": api,
        "method": method,
        "path": path,
        "query": query,
        "auth": {"scheme": None, "matched": False},
        "headers": {h: headers[h] for h in RECORDED_HEADERS if h in headers},
        "body": body,
    }
    with STATE.lock:
        handle = handle_gitlab if api == "gitlab" else handle_github
        failure = STATE.take_failure(method, path)
        try:
            if failure is not None:
                reply = injected_failure(api, failure)
            else:
                reply = handle(method, path, query, body, headers, record)
        except ApiError as e:
            reply = e.reply
        record["status"] = reply.status
        record["seq"] = len(STATE.requests) + 1
        STATE.requests.append(record)
    return reply


def injected_failure(api, status):
    if api == "gitlab":
        return Reply(status, {"message": "%d injected failure" % status})
    return Reply(status, {"message": "Server Error", "documentation_url": GITHUB_DOCS, "status": str(status)})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "aida-test-fake-provider/1"

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def dispatch(self):
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        forms = parts.path.startswith("/api/v4/")
        body = parse_body(self.read_body(), self.headers.get("Content-Type", ""), forms)
        if parts.path.startswith("/_fake/"):
            reply = control(self.command, parts.path, body)
        else:
            reply = api_call(self.command, parts.path, query, body, self.headers)
        self.send(reply)

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def read_chunked(self):
        data = b""
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return data
            data += self.rfile.read(size)
            self.rfile.readline()

    def send(self, reply):
        if reply.text is not None:
            payload, content_type = reply.text.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(reply.body).encode(), "application/json; charset=utf-8"
        self.send_response(reply.status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), format % args))


def main():
    token = os.environ.get("FAKE_PROVIDER_TOKEN")
    if not token:
        sys.exit("FAKE_PROVIDER_TOKEN must be set")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    CONFIG.update(token=token, base="http://127.0.0.1:%d" % port)
    print("listening on %d" % port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
