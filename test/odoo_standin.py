#!/usr/bin/env python3
"""A stand-in for an Odoo server with the auto_webhook addon.

Speaks Odoo's JSON-RPC protocol (POST /jsonrpc: common.version,
common.login, common.authenticate, object.execute_kw with search_read,
search, search_count, read, fields_get on update.webhook; search_read,
search, search_count, read, fields_get, get_available_models on ir.model;
search_read, search, search_count, read, fields_get, create, write, unlink
on webhook.config), with Odoo's exact error envelopes, and keeps the
update.webhook and webhook.config rows in memory.  ir.model can be made
unreadable (AccessError, as Odoo 15+ answers non-admin users) while
get_available_models keeps working, as on Odoo 16+.

A control API (POST /control, JSON {"op": ...}) lets tests add events,
reserve ids that become visible later (out-of-order commits), skip ids
(rolled-back transactions), add users who can log in, switch to the
legacy field set, deny ir.model reads, inspect and pre-seed
webhook.config rows, and queue
faults for the next requests: HTTP 500/502/429, HTML bodies, truncated
bodies, connection resets, hangs, error envelopes, session expiry, wrong
credentials.  Python standard library only.

With --push-url (or the control op "set" with push_url and push_key), it
pushes each new row after it is committed (visible), as the auto_webhook
addon's subscriber does: POST to the URL with X-API-Key, the row's payload
plus _webhook_metadata {event_id, event_type, model, record_id,
timestamp}.  Pushes go out from a thread of their own, in commit order;
the control op "pushes" returns their log (id, HTTP status, seconds).

With --databases N it also serves the databases DB_1 to DB_N (DB is
--db), each with its own log, faults and settings (a request goes to the
database it names; a control op to its "db", else to the default one), as
one Odoo server hosting many databases. The control op "set" with
"hang": S holds every request of that database S seconds, then resets the
connection (a hung Odoo); "hang": 0 ends it.

    test/odoo_standin.py --port 8069 [--generate 5]   # 5 random events/s
    test/odoo_standin.py --push-url http://127.0.0.1:8080/api/v1/webhooks/receive --push-key KEY
"""
import argparse
import gzip
import json
import queue
import random
import re
import socket
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ALL_FIELDS = {
    "id": "integer", "model": "char", "record_id": "integer", "event": "selection",
    "payload": "json", "timestamp": "datetime", "user_id": "many2one",
    "priority": "selection", "category": "selection", "is_processed": "boolean",
    "processed_at": "datetime", "is_archived": "boolean", "archived_at": "datetime",
    "config_id": "many2one",
}
LEGACY_FIELDS = ("id", "model", "record_id", "event", "timestamp")
# The fields BridgeCore asks for; bulk rows are pre-rendered with these.
RENDERED_FIELDS = ("id", "model", "record_id", "event", "timestamp", "priority", "category",
                   "payload", "user_id")
MODELS = ["sale.order", "sale.order.line", "res.partner", "product.product",
          "stock.picking", "account.move", "mail.message", "purchase.order"]
USERS = [[2, "Mitchell Admin"], [6, "Marc Demo"], [7, "Joel Willis"]]
PRIORITY = {"sale.order": "high", "account.move": "high", "stock.picking": "high",
            "res.partner": "medium", "purchase.order": "high"}
IR_MODELS = [
    {"id": 1, "model": "sale.order", "name": "Sales Order", "state": "base", "transient": False},
    {"id": 2, "model": "res.partner", "name": "Contact", "state": "base", "transient": False},
    {"id": 3, "model": "stock.move", "name": "Stock Move", "state": "base", "transient": False},
    {"id": 4, "model": "mail.message", "name": "Message", "state": "base", "transient": False},
    {"id": 5, "model": "sale.advance.payment.inv", "name": "Invoice wizard", "state": "base", "transient": True},
    {"id": 6, "model": "x_custom.thing", "name": "Custom", "state": "manual", "transient": False},
    # critical (exact names)
    {"id": 7, "model": "purchase.order", "name": "Purchase Order", "state": "base", "transient": False},
    {"id": 8, "model": "account.move", "name": "Journal Entry", "state": "base", "transient": False},
    {"id": 9, "model": "stock.picking", "name": "Transfer", "state": "base", "transient": False},
    {"id": 10, "model": "account.payment", "name": "Payments", "state": "base", "transient": False},
    # important (prefixes); account.payment.term and sale.order.line are not critical
    {"id": 11, "model": "sale.order.line", "name": "Sales Order Line", "state": "base", "transient": False},
    {"id": 12, "model": "sale.report", "name": "Sales Analysis Report", "state": "base", "transient": False},
    {"id": 13, "model": "purchase.order.line", "name": "Purchase Order Line", "state": "base", "transient": False},
    {"id": 14, "model": "account.move.line", "name": "Journal Item", "state": "base", "transient": False},
    {"id": 15, "model": "account.payment.term", "name": "Payment Terms", "state": "base", "transient": False},
    {"id": 16, "model": "product.product", "name": "Product Variant", "state": "base", "transient": False},
    {"id": 17, "model": "product.template", "name": "Product", "state": "base", "transient": False},
    {"id": 18, "model": "hr.employee", "name": "Employee", "state": "base", "transient": False},
    {"id": 19, "model": "project.task", "name": "Task", "state": "base", "transient": False},
    {"id": 20, "model": "crm.lead", "name": "Lead/Opportunity", "state": "base", "transient": False},
    # standard; repair.order contains "ir." and so is ignored by the middleware
    {"id": 21, "model": "res.company", "name": "Companies", "state": "base", "transient": False},
    {"id": 22, "model": "res.partner.bank", "name": "Bank Accounts", "state": "base", "transient": False},
    {"id": 23, "model": "uom.uom", "name": "Product Unit of Measure", "state": "base", "transient": False},
    {"id": 24, "model": "repair.order", "name": "Repair Order", "state": "base", "transient": False},
    # ignored
    {"id": 25, "model": "ir.attachment", "name": "Attachment", "state": "base", "transient": False},
    {"id": 26, "model": "ir.cron", "name": "Scheduled Actions", "state": "base", "transient": False},
    {"id": 27, "model": "base.automation", "name": "Automation Rule", "state": "base", "transient": False},
    {"id": 28, "model": "mail.followers", "name": "Document Followers", "state": "base", "transient": False},
    {"id": 29, "model": "mail.activity", "name": "Activity", "state": "base", "transient": False},
    {"id": 30, "model": "mail.message.subtype", "name": "Message subtypes", "state": "base", "transient": False},
    {"id": 31, "model": "bus.bus", "name": "Communication Bus", "state": "base", "transient": False},
    {"id": 32, "model": "report.paperformat", "name": "Paper Format Config", "state": "base", "transient": False},
    {"id": 33, "model": "x_wizard_step", "name": "Wizard Step", "state": "manual", "transient": False},
    # transient wizards
    {"id": 34, "model": "account.payment.register", "name": "Pay", "state": "base", "transient": True},
    {"id": 35, "model": "stock.return.picking", "name": "Return Picking", "state": "base", "transient": True},
    {"id": 36, "model": "mail.compose.message", "name": "Email composition wizard", "state": "base", "transient": True},
    {"id": 37, "model": "base.language.install", "name": "Install Language", "state": "base", "transient": True},
]
IR_BY_ID = {m["id"]: m for m in IR_MODELS}
IR_BY_MODEL = {m["model"]: m for m in IR_MODELS}
IR_MODEL_FIELDS = {"id": "integer", "model": "char", "name": "char", "state": "selection",
                   "transient": "boolean", "display_name": "char"}
IR_MODEL_ACCESS_ERROR = ("You are not allowed to access 'Models' (ir.model) records.\n\n"
                         "This operation is allowed for the following groups:\n"
                         "\t- Administration/Access Rights\n\n"
                         "Contact your administrator to request access if necessary.")
# webhook.config, the auto_webhook addon's per-model tracking configuration.
CONFIG_FIELDS = {"id": "integer", "name": "char", "model_id": "many2one", "model_name": "char",
                 "enabled": "boolean", "priority": "selection", "category": "selection",
                 "events": "selection", "display_name": "char"}
CONFIG_SELECTIONS = {
    "priority": [["high", "High"], ["medium", "Medium"], ["low", "Low"]],
    "category": [["business", "Business"], ["system", "System"], ["notification", "Notification"],
                 ["custom", "Custom"]],
    "events": [["create", "Create Only"], ["write", "Write Only"], ["unlink", "Delete Only"],
               ["create,write", "Create & Write"], ["create,unlink", "Create & Delete"],
               ["write,unlink", "Write & Delete"], ["create,write,unlink", "All Events"]],
}
CONFIG_EVENTS = ("create", "write", "unlink")
# Positional parameter names of the ORM methods the stand-in serves (after the ids of
# read/write/unlink), as execute_kw binds args and kwargs to them.
SIGNATURES = {
    "search_read": ("domain", "fields", "offset", "limit", "order"),
    "search": ("domain", "offset", "limit", "order"),
    "search_count": ("domain", "limit"),
    "read": ("ids", "fields", "load"),
    "fields_get": ("allfields", "attributes"),
    "create": ("vals_list",),
    "write": ("ids", "vals"),
    "unlink": ("ids",),
    "get_available_models": (),
}


def odoo_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


class OdooError(Exception):
    def __init__(self, name, message, code=200):
        super().__init__(message)
        self.name, self.message, self.code = name, message, code


class State:
    def __init__(self, db, login, password):
        self.lock = threading.Lock()
        self.db, self.login, self.password = db, login, password
        self.uid = 2
        self.users = {}           # login -> (password, uid): app users (add_user)
        self.rows = {}            # id -> row (visible)
        self.reserved = {}        # id -> row (not yet visible)
        self.next_id = 1
        self.legacy = False
        self.faults = []          # queue of fault dicts, applied to /jsonrpc requests
        self.failed_logins = 0
        self.logins = 0           # login/authenticate calls
        self.lockout_until = 0.0
        self.requests = 0
        self.search_reads = 0         # update.webhook search_reads answered
        self.search_reads_started = 0
        self.session_valid = True
        self.rendered = {}        # id -> pre-rendered JSON text (bulk rows)
        self.ir_model_access = True   # False: ir.model reads raise AccessError
        self.configs = {}         # id -> webhook.config row
        self.next_config_id = 1
        self.search_read_delay = 0.0  # seconds each update.webhook search_read waits
        self.hang = 0.0           # seconds every request is held before a reset (a hung Odoo)
        self.push_url = None      # where new rows are pushed (the doorbell), or None
        self.push_key = None      # their X-API-Key
        self.push_log = []        # [{"id", "status", "seconds", "at"}] of the pushes sent
        self.push_queue = queue.Queue()

    def make_row(self, model=None, payload_size=0, unicode=False, event=None):
        rid = self.next_id
        self.next_id += 1
        model = model or random.choice(MODELS)
        record_id = random.randint(1, 5000)
        event = event or random.choice(["create", "write", "write", "unlink"])
        name = "Record %d" % record_id
        if unicode:
            name += " caf\u00e9 \u4e2d\u6587 \U0001F600 \u0645\u0631\u062d\u0628\u0627"
        payload = {"name": name, "_metadata": {"model": model, "id": record_id, "display_name": name}}
        if payload_size:
            payload["note"] = "x" * payload_size
        if event == "write":
            payload["_changed_fields"] = ["name"]
        row = {"id": rid, "model": model, "record_id": record_id, "event": event,
               "payload": payload, "timestamp": odoo_now(), "user_id": random.choice(USERS + [False]),
               "priority": PRIORITY.get(model, "low"), "category": "business",
               "is_processed": False, "processed_at": False, "is_archived": False,
               "archived_at": False, "config_id": False}
        return row

    def queue_push(self, row):
        """Called with the lock held, once the row is visible (committed)."""
        if self.push_url:
            self.push_queue.put((self.push_url, self.push_key, row))


def instant_push_body(row):
    """The auto_webhook addon's instant push: the record's payload plus
    _webhook_metadata."""
    payload = row.get("payload") if isinstance(row.get("payload"), dict) else {}
    body = dict(payload)
    body["_webhook_metadata"] = {"event_id": row["id"], "event_type": row.get("event"),
                                 "model": row.get("model"), "record_id": row.get("record_id"),
                                 "timestamp": row.get("timestamp")}
    return body


def pusher():
    """Sends the queued pushes, one at a time, in commit order."""
    while True:
        url, key, row = STATE.push_queue.get()
        data = json.dumps(instant_push_body(row), ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if key:
            headers["X-API-Key"] = key
        started = time.monotonic()
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers, method="POST"),
                                        timeout=10) as res:
                status = res.status
                res.read()
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError:
            status = None           # unreachable: a lost ring
        with STATE.lock:
            STATE.push_log.append({"id": row["id"], "status": status, "at": time.time(),
                                   "seconds": round(time.monotonic() - started, 6)})


STATE = None     # the default database's state
STATES = {}      # database name -> State: the default and those of --databases


def state_of(db):
    """The state of a database; the default one's for any other name (so
    that a wrong name is refused by its checks, as before)."""
    return STATES.get(db, STATE) if isinstance(db, str) else STATE


def match(row, domain):
    """Evaluates an Odoo domain (Polish notation, implicit AND)."""
    def term(t):
        field, op, value = t
        v = row.get(field)
        if op == "=":
            return v == value
        if op == "!=":
            return v != value
        if op == ">":
            return v > value
        if op == ">=":
            return v >= value
        if op == "<":
            return v < value
        if op == "<=":
            return v <= value
        if op == "in":
            return v in value
        if op == "not in":
            return v not in value
        if op in ("like", "ilike", "not like", "not ilike", "=like", "=ilike"):
            # like/ilike: substring; =like/=ilike: SQL pattern (% and _).
            if op.startswith("="):
                pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c)
                                  for c in str(value))
                return isinstance(v, str) and re.fullmatch(pattern, v, re.S | (re.I if "ilike" in op else 0)) is not None
            hit = isinstance(v, str) and (str(value).lower() in v.lower() if "ilike" in op else str(value) in v)
            return (not hit) if op.startswith("not") else hit
        raise OdooError("builtins.ValueError", "Invalid leaf %r" % (t,))

    def parse(i):
        tok = domain[i]
        if tok == "!":
            val, j = parse(i + 1)
            return (not val), j
        if tok in ("&", "|"):
            a, j = parse(i + 1)
            b, k = parse(j)
            return (a and b) if tok == "&" else (a or b), k
        if not isinstance(tok, list) or len(tok) != 3:
            raise OdooError("builtins.ValueError", "Invalid domain term %r" % (tok,))
        return term(tok), i + 1

    i, result = 0, True
    while i < len(domain):
        val, i = parse(i)
        result = result and val
    return result


def id_candidates(rows, domain, limit, max_id):
    """The rows a cursor domain can match, found by id instead of a scan:
    [("id", ">", c)] or ["|", ("id", ">", c), ("id", "in", ids)], ascending,
    at most limit of them above c.  None when the domain has another shape
    (then every row is a candidate)."""
    def above(t):
        return isinstance(t, list) and len(t) == 3 and t[0] == "id" and t[1] == ">"
    if len(domain) == 1 and above(domain[0]):
        start, extra = domain[0][2], []
    elif (len(domain) == 3 and domain[0] == "|" and above(domain[1]) and isinstance(domain[2], list)
          and domain[2][:2] == ["id", "in"]):
        start, extra = domain[1][2], domain[2][2]
    else:
        return None
    found = [rows[i] for i in sorted(extra) if i in rows and i <= start]
    if max_id - start > 4 * len(rows):
        # Sparse ids (a large jump): walk the rows, not the id range.
        for i in sorted(k for k in rows if k > start):
            if limit and len(found) >= limit:
                break
            found.append(rows[i])
        return found
    i = start + 1
    while i <= max_id and (not limit or len(found) < limit):
        if i in rows:
            found.append(rows[i])
        i += 1
    return found


def search(all_rows, domain, order, limit, offset, max_id):
    candidates = None
    if "desc" not in (order or "id desc").lower() and not offset:
        candidates = id_candidates(all_rows, domain, limit, max_id)
    if candidates is None:
        candidates = list(all_rows.values())
    rows = [r for r in candidates if match(r, domain)]
    desc = "desc" in (order or "id desc").lower()
    rows.sort(key=lambda r: r["id"], reverse=desc)
    rows = rows[offset or 0:]
    if limit:
        rows = rows[:limit]
    return rows


def bind(model, method, margs, kwargs):
    """Binds execute_kw's args and kwargs to the method's parameters, as Python does."""
    names = SIGNATURES[method]
    if not isinstance(margs, list):
        raise OdooError("builtins.TypeError", "%s.%s() argument after * must be an iterable" % (model, method))
    if len(margs) > len(names):
        raise OdooError("builtins.TypeError", "%s() takes at most %d positional arguments (%d given)"
                        % (method, len(names), len(margs)))
    out = dict(zip(names, margs))
    for k, v in (kwargs or {}).items():
        if k == "context":
            continue
        if k not in names:
            raise OdooError("builtins.TypeError", "%s() got an unexpected keyword argument '%s'" % (method, k))
        if k in out:
            raise OdooError("builtins.TypeError", "%s() got multiple values for argument '%s'" % (method, k))
        out[k] = v
    return out


def norm_ids(ids):
    if isinstance(ids, bool) or ids is None:
        return []
    if isinstance(ids, int):
        return [ids]
    if isinstance(ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        return ids
    raise OdooError("builtins.ValueError", "Invalid ids %r" % (ids,))


def check_fields(model, known, wanted):
    if wanted is None or wanted is False:
        return
    if not isinstance(wanted, list):
        raise OdooError("builtins.ValueError", "Invalid fields %r on model %r" % (wanted, model))
    for f in wanted:
        if f not in known:
            raise OdooError("builtins.ValueError", "Invalid field %r on model %r" % (f, model))


def check_domain(model, known, domain):
    if not isinstance(domain, list):
        raise OdooError("builtins.ValueError", "Invalid domain %r" % (domain,))
    for t in domain:
        if isinstance(t, list) and len(t) == 3 and t[0] not in known:
            raise OdooError("builtins.ValueError", "Invalid field %s.%s in leaf %r" % (model, t[0], tuple(t)))


def order_rows(model, known, rows, order):
    """Sorts like Odoo's ORDER BY: "field [asc|desc], ...", NULLs last ascending
    (first descending), many2one by the name."""
    keys = []
    for part in str(order).split(","):
        words = part.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise OdooError("odoo.exceptions.UserError",
                            'Invalid "order" specified (%s). A valid "order" specification is a comma-separated '
                            'list of valid field names (optionally followed by asc/desc for the direction)' % part.strip())
        if words[0] not in known:
            raise OdooError("builtins.ValueError", "Invalid field %r on model %r" % (words[0], model))
        keys.append((words[0], len(words) == 2 and words[1].lower() == "desc"))

    def key(field):
        def k(row):
            v = row.get(field)
            if isinstance(v, list):
                v = v[1]
            if v is None or (v is False and known[field] != "boolean"):
                return (1, 0)
            return (0, v)
        return k
    rows = list(rows)
    for field, desc in reversed(keys):
        rows.sort(key=key(field), reverse=desc)
    return rows


def select(model, known, rows, a, default_order, flat=None):
    """search semantics over in-memory rows: domain, order, offset, limit."""
    domain = a.get("domain") or []
    check_domain(model, known, domain)
    found = [r for r in rows if match(flat(r) if flat else r, domain)]
    found = order_rows(model, known, found, a.get("order") or default_order)
    found = found[a.get("offset") or 0:]
    if a.get("limit"):
        found = found[:a["limit"]]
    return found


def render(row, wanted, known):
    names = ["id"] + [f for f in (wanted or known) if f != "id"]
    out = {f: row.get(f, False) for f in names}
    # Hostile records for tests: no id at all, or an id the client must refuse.
    if row.get("__no_id"):
        del out["id"]
    elif "__id_as" in row:
        out["id"] = row["__id_as"]
    return out


def fields_get(known, selections, a):
    attrs = a.get("attributes")
    out = {}
    for f, t in known.items():
        if a.get("allfields") and f not in a["allfields"]:
            continue
        desc = {"type": t, "string": f.replace("_", " ").title(), "readonly": f in ("id", "display_name")}
        if t == "selection":
            desc["selection"] = selections.get(f, [])
        if t == "many2one":
            desc["relation"] = "ir.model"
        out[f] = {k: v for k, v in desc.items() if not attrs or k in attrs}
    return out


def ir_model_kw(st, method, margs, kwargs):
    if method not in ("search_read", "search", "search_count", "read", "fields_get", "get_available_models"):
        raise OdooError("builtins.AttributeError", "The method '%s' does not exist on the model 'ir.model'" % method)
    a = bind("ir.model", method, margs, kwargs)
    if method == "fields_get":
        return fields_get(IR_MODEL_FIELDS, {"state": [["manual", "Custom Object"], ["base", "Base Object"]]}, a)
    if method == "get_available_models":
        return [{"model": m["model"], "display_name": m["name"]}
                for m in sorted(IR_MODELS, key=lambda m: m["model"]) if not m["transient"]]
    if not st.ir_model_access:
        raise OdooError("odoo.exceptions.AccessError", IR_MODEL_ACCESS_ERROR)
    check_fields("ir.model", IR_MODEL_FIELDS, a.get("fields"))
    rows = [dict(m, display_name=m["name"]) for m in IR_MODELS]
    if method == "read":
        by_id = {r["id"]: r for r in rows}
        return [render(by_id[i], a.get("fields"), IR_MODEL_FIELDS) for i in norm_ids(a.get("ids")) if i in by_id]
    if method == "search_count":
        a = {"domain": a.get("domain"), "limit": a.get("limit")}
    found = select("ir.model", IR_MODEL_FIELDS, rows, a, "model")
    if method == "search_count":
        return len(found)
    if method == "search":
        return [r["id"] for r in found]
    return [render(r, a.get("fields"), IR_MODEL_FIELDS) for r in found]


def config_flat(row):
    """The row as a domain sees it: a many2one compares by its id."""
    if isinstance(row.get("model_id"), list):
        return dict(row, model_id=row["model_id"][0])
    return row


def config_missing(field, label):
    return OdooError("odoo.exceptions.ValidationError",
                     "The operation cannot be completed:\n- Create/update: a mandatory field is not set.\n"
                     "- Delete: another model requires the record being deleted. If possible, archive it instead.\n\n"
                     "Model: Webhook Configuration (webhook.config)\nField: %s (%s)" % (label, field))


def config_values(vals, current=None):
    """The webhook.config row that vals make (from current, or from the defaults), validated
    as the addon and Odoo's ORM do; duplicates are checked by the caller."""
    if not isinstance(vals, dict):
        raise OdooError("builtins.ValueError", "Invalid values %r for model 'webhook.config'" % (vals,))
    for k in vals:
        if k not in CONFIG_FIELDS:
            raise OdooError("builtins.ValueError", "Invalid field %r on model 'webhook.config'" % k)
    row = dict(current) if current else {"name": False, "model_id": False, "model_name": False, "enabled": True,
                                         "priority": "medium", "category": "business",
                                         "events": "create,write,unlink"}
    if "model_id" in vals and vals["model_id"] not in (False, None):
        mid = vals["model_id"][0] if isinstance(vals["model_id"], list) and vals["model_id"] else vals["model_id"]
        m = IR_BY_ID.get(mid)
        if m is None:
            raise OdooError("odoo.exceptions.ValidationError", "Model with id %r does not exist" % (mid,))
        if vals.get("model_name") not in (None, m["model"]):
            raise OdooError("odoo.exceptions.ValidationError", "model_name %r does not match model_id %r (%s)"
                            % (vals["model_name"], mid, m["model"]))
        row["model_id"], row["model_name"] = [m["id"], m["name"]], m["model"]
    elif "model_id" in vals:
        row["model_id"], row["model_name"] = False, False
    elif "model_name" in vals:
        name = vals["model_name"]
        if name in (False, None, ""):
            row["model_id"], row["model_name"] = False, False
        else:
            m = IR_BY_MODEL.get(name) if isinstance(name, str) else None
            if m is None:
                raise OdooError("odoo.exceptions.ValidationError", "Model %r does not exist" % (name,))
            row["model_id"], row["model_name"] = [m["id"], m["name"]], m["model"]
    if not row["model_name"]:
        raise config_missing("model_name", "Model Technical Name")
    for f in ("priority", "category"):
        if f in vals:
            v = vals[f]
            if v in (False, None):
                if f == "priority":
                    raise config_missing("priority", "Priority")
                row[f] = False
            elif v not in [k for k, _ in CONFIG_SELECTIONS[f]]:
                raise OdooError("builtins.ValueError", "Wrong value for webhook.config.%s: %r" % (f, v))
            else:
                row[f] = v
    if "events" in vals:
        v = vals["events"]
        parts = [p.strip() for p in v.split(",")] if isinstance(v, str) else []
        if not parts or any(p not in CONFIG_EVENTS for p in parts) or len(set(parts)) != len(parts):
            raise OdooError("odoo.exceptions.ValidationError",
                            "Invalid tracked events %r: use a comma-joined subset of create, write, unlink" % (v,))
        row["events"] = ",".join(e for e in CONFIG_EVENTS if e in parts)
    if "enabled" in vals:
        row["enabled"] = bool(vals["enabled"])
    if "name" in vals:
        row["name"] = vals["name"] or False
    if not row["name"]:
        row["name"] = "Webhook Config - %s" % row["model_id"][1]
    row["display_name"] = row["name"]
    return row


def check_unique(rows, staged):
    """Raises when two configurations (stored rows not being replaced, plus staged ones) share a model."""
    seen = {r["model_name"] for rid, r in rows.items() if rid not in {s.get("id") for s in staged}}
    for r in staged:
        if r["model_name"] in seen:
            raise OdooError("odoo.exceptions.ValidationError",
                            "A webhook configuration already exists for model %s" % r["model_name"])
        seen.add(r["model_name"])


def webhook_config_kw(st, method, margs, kwargs):
    if method not in ("search_read", "search", "search_count", "read", "fields_get", "create", "write", "unlink"):
        raise OdooError("builtins.AttributeError",
                        "The method '%s' does not exist on the model 'webhook.config'" % method)
    a = bind("webhook.config", method, margs, kwargs)
    known = CONFIG_FIELDS
    if method == "fields_get":
        return fields_get(known, CONFIG_SELECTIONS, a)
    with st.lock:
        if method == "create":
            vals = a.get("vals_list")
            many = isinstance(vals, list)
            staged = [config_values(v) for v in (vals if many else [vals])]
            check_unique(st.configs, staged)
            ids = []
            for row in staged:
                row["id"] = st.next_config_id
                st.next_config_id += 1
                st.configs[row["id"]] = row
                ids.append(row["id"])
            return ids if many else ids[0]
        if method == "write":
            ids = norm_ids(a.get("ids"))
            missing = [i for i in ids if i not in st.configs]
            if missing:
                raise OdooError("odoo.exceptions.MissingError",
                                "Record does not exist or has been deleted.\n(Record: webhook.config(%s), User: %d)"
                                % ("".join("%d," % i for i in missing), st.uid))
            staged = [dict(config_values(a.get("vals") or {}, st.configs[i]), id=i) for i in ids]
            check_unique(st.configs, staged)
            for row in staged:
                st.configs[row["id"]] = row
            return True
        if method == "unlink":
            for i in norm_ids(a.get("ids")):
                st.configs.pop(i, None)
            return True
        check_fields("webhook.config", known, a.get("fields"))
        if method == "read":
            return [render(st.configs[i], a.get("fields"), known) for i in norm_ids(a.get("ids")) if i in st.configs]
        if method == "search_count":
            a = {"domain": a.get("domain"), "limit": a.get("limit")}
        found = select("webhook.config", known, list(st.configs.values()), a, "priority desc, name", config_flat)
        if method == "search_count":
            return len(found)
        if method == "search":
            return [r["id"] for r in found]
        return [render(r, a.get("fields"), known) for r in found]


def execute_kw(st, params):
    args = params.get("args", [])
    if len(args) < 5:
        raise OdooError("builtins.TypeError", "execute_kw() missing required positional arguments")
    db, uid, password, model, method = args[:5]
    margs = args[5] if len(args) > 5 else []
    kwargs = args[6] if len(args) > 6 else {}
    if not st.session_valid:
        st.session_valid = True
        raise OdooError("odoo.http.SessionExpiredException", "Session expired", code=100)
    if db != st.db or uid != st.uid or password != st.password:
        raise OdooError("odoo.exceptions.AccessDenied", "Access Denied")
    if model == "ir.model":
        return ir_model_kw(st, method, margs, kwargs)
    if model == "webhook.config":
        return webhook_config_kw(st, method, margs, kwargs)
    if model != "update.webhook":
        raise OdooError("odoo.exceptions.UserError", "Object %s doesn't exist" % model)
    fields = LEGACY_FIELDS if st.legacy else tuple(ALL_FIELDS)
    if method == "fields_get":
        return {f: {"type": ALL_FIELDS[f], "string": f} for f in fields}
    if method in ("search_read", "search", "search_count"):
        domain = margs[0] if margs else kwargs.get("domain", [])
        wanted = kwargs.get("fields") or (margs[1] if len(margs) > 1 else None) or list(fields)
        for f in wanted:
            if f not in fields:
                raise OdooError("builtins.ValueError", "Invalid field %r on model 'update.webhook'" % f)
        if method == "search_read":
            with st.lock:
                st.search_reads_started += 1
            if st.search_read_delay > 0:
                time.sleep(st.search_read_delay)     # a slow Odoo: rings arrive during the fetch
        with st.lock:
            rows = search(st.rows, domain, kwargs.get("order"),
                          kwargs.get("limit"), kwargs.get("offset"), st.next_id - 1)
            st.search_reads += method == "search_read"
            if method == "search_count":
                return len(rows)
            if method == "search":
                return [r["id"] for r in rows]
            if set(wanted) == set(RENDERED_FIELDS) and rows and all(r["id"] in st.rendered for r in rows):
                return RawRows([st.rendered[r["id"]] for r in rows])
            # Odoo answers every requested field; an empty one is false.
            return [render(r, wanted, fields) for r in rows]
    if method == "read":
        a = bind("update.webhook", method, margs, kwargs)
        wanted = a.get("fields") or list(fields)
        check_fields("update.webhook", fields, wanted)
        with st.lock:
            return [render(st.rows[i], wanted, fields) for i in norm_ids(a.get("ids")) if i in st.rows]
    raise OdooError("builtins.AttributeError",
                    "The method '%s' does not exist on the model 'update.webhook'" % method)


class RawRows(list):
    """Pre-rendered rows, joined as text (the benchmark's fast path)."""


def common(st, params):
    method, args = params.get("method"), params.get("args", [])
    if method == "version":
        return {"server_version": "17.0", "server_version_info": [17, 0, 0, "final", 0, ""],
                "server_serie": "17.0", "protocol_version": 1}
    if method in ("login", "authenticate"):
        db, login, password = (args + [None, None, None])[:3]
        st.logins += 1
        if time.time() < st.lockout_until:
            return False
        if db == st.db and login == st.login and password == st.password:
            st.failed_logins = 0
            return st.uid
        if db == st.db and login in st.users and st.users[login][0] == password:
            st.failed_logins = 0
            return st.users[login][1]
        st.failed_logins += 1
        if st.failed_logins >= 5:
            st.lockout_until = time.time() + 60
        return False
    raise OdooError("builtins.AttributeError", "The method '%s' does not exist" % method)


def error_envelope(req_id, err):
    return {"jsonrpc": "2.0", "id": req_id,
            "error": {"code": err.code, "message": "Odoo Session Expired" if err.code == 100 else "Odoo Server Error",
                      "data": {"name": err.name, "debug": "Traceback (most recent call last):\n...",
                               "message": err.message, "arguments": [err.message], "context": {}}}}


HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"
MAINTENANCE = b"<!DOCTYPE html><html><body><h1>Odoo is under maintenance</h1></body></html>"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Werkzeug/2.0.2 Python/3.10"

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle's
        # algorithm and the client's delayed ACK add ~40 ms to each answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_body(self, status, body, ctype="application/json; charset=utf-8", headers=None,
                  compress=True):
        if compress and "gzip" in (self.headers.get("Accept-Encoding") or "") and len(body) > 1024:
            body = gzip.compress(body, 1)
            headers = dict(headers or {}, **{"Content-Encoding": "gzip"})
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n)

    def do_POST(self):
        raw = self.read_body()
        if self.path == "/control":
            return self.control(raw)
        if self.path != "/jsonrpc":
            return self.send_body(404, b"<html><body>404 Not Found</body></html>", "text/html")
        try:
            req = json.loads(raw)
        except ValueError:
            req = None
        params = req.get("params") if isinstance(req, dict) else None
        args = params.get("args") if isinstance(params, dict) else None
        st = state_of(args[0] if isinstance(args, list) and args else None)
        with st.lock:
            st.requests += 1
            fault = st.faults.pop(0) if st.faults else None
            hang = st.hang
        if hang:
            # A hung Odoo: the request is held, then the connection reset.
            time.sleep(hang)
            return self.close_hard()
        if fault and self.apply_fault(fault):
            return
        if not isinstance(req, dict):
            return self.send_body(400, b"Invalid JSON data", "text/plain")
        req_id, params = req.get("id"), req.get("params") or {}
        try:
            if fault and fault["kind"] == "rpc_error":
                raise OdooError(fault.get("name", "psycopg2.OperationalError"), fault.get("message", "database trouble"))
            if fault and fault["kind"] == "access_denied":
                raise OdooError("odoo.exceptions.AccessDenied", "Access Denied")
            if fault and fault["kind"] == "session_expired":
                raise OdooError("odoo.http.SessionExpiredException", "Session expired", code=100)
            service = params.get("service")
            if service == "common":
                result = common(st, params)
            elif service == "object":
                result = execute_kw(st, params)
            else:
                raise OdooError("builtins.KeyError", "No such service %r" % service)
        except OdooError as e:
            return self.send_body(200, json.dumps(error_envelope(req_id, e)).encode())
        if isinstance(result, RawRows):
            body = ('{"jsonrpc": "2.0", "id": %s, "result": [%s]}' % (json.dumps(req_id), ",".join(result))).encode()
        else:
            # surrogateescape: a test puts raw invalid bytes into a string as
            # U+DC80..U+DCFF (Python's json module emits NaN and Infinity as is).
            body = json.dumps({"jsonrpc": "2.0", "id": req_id, "result": result},
                              ensure_ascii=False).encode("utf-8", "surrogateescape")
        # Pre-rendered (benchmark) batches go out as they are: compressing
        # them would measure this stand-in rather than BridgeCore.
        self.send_body(200, body, compress=not isinstance(result, RawRows))

    def apply_fault(self, f):
        """Returns True when the fault answered the request itself."""
        kind = f["kind"]
        if kind in ("http500", "http503"):
            self.send_body(int(kind[4:]), b"<html><body><h1>Internal Server Error</h1></body></html>", "text/html")
        elif kind == "http502":
            self.send_body(502, HTML_PAGE, "text/html")
        elif kind == "http429":
            self.send_body(429, b"Too Many Requests", "text/plain", {"Retry-After": str(f.get("retry_after", 2))})
        elif kind == "html":
            self.send_body(200, MAINTENANCE, "text/html")
        elif kind == "garbage":
            self.send_body(200, b'{"jsonrpc": "2.0", "id": 1, "result": [{"id": 1,, }]}')
        elif kind == "truncated":
            body = b'{"jsonrpc": "2.0", "id": 1, "result": [{"id": 999999, "model": "sale.order", "rec'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) * 3))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            self.close_hard()
        elif kind == "reset":
            self.close_hard()
        elif kind == "hang":
            time.sleep(f.get("seconds", 60))
            self.close_hard()
        elif kind == "huge":
            self.send_body(200, b'{"jsonrpc": "2.0", "id": 1, "result": "' + b"x" * f.get("bytes", 1 << 20) + b'"}')
        elif kind == "not_rpc":
            self.send_body(200, b'{"hello": "world"}')
        elif kind == "raw_result":
            # A result exactly as given, for JSON that Python's json cannot write.
            self.send_body(200, b'{"jsonrpc": "2.0", "id": 1, "result": ' + f["result"].encode() + b'}')
        elif kind == "null_result":
            self.send_body(200, b'{"jsonrpc": "2.0", "id": 1, "result": null}')
        else:
            return False
        return True

    def close_hard(self):
        """Closes with a TCP reset."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        self.close_connection = True

    def control(self, raw):
        cmd = json.loads(raw or b"{}")
        st = state_of(cmd.get("db"))
        op = cmd.get("op")
        out = {"ok": True}
        with st.lock:
            if op == "add_events":
                ids = []
                for _ in range(cmd.get("count", 1)):
                    row = st.make_row(cmd.get("model"), cmd.get("payload_size", 0), cmd.get("unicode", False),
                                      cmd.get("event"))
                    if cmd.get("payload") is not None:
                        row["payload"] = cmd["payload"]
                    st.rows[row["id"]] = row
                    ids.append(row["id"])
                    st.queue_push(row)
                out["ids"] = ids
                # The moment the rows became visible (committed), in Unix seconds:
                # benchmarks time latencies from it.
                out["committed_at"] = time.time()
            elif op == "add_raw":
                # A record exactly as given (for malformed-record tests); id assigned.
                rid = st.next_id
                st.next_id += 1
                row = dict(cmd["row"], id=rid)
                st.rows[rid] = row
                out["ids"] = [rid]
            elif op == "bulk":
                # Many rows, pre-rendered once so that search_read answers fast.
                ids = []
                for _ in range(cmd["count"]):
                    row = st.make_row(cmd.get("model"))
                    st.rows[row["id"]] = row
                    st.rendered[row["id"]] = json.dumps({f: row[f] for f in RENDERED_FIELDS},
                                                        ensure_ascii=False)
                    ids.append(row["id"])
                out["first"], out["last"] = ids[0], ids[-1]
            elif op == "reserve":
                ids = []
                for _ in range(cmd.get("count", 1)):
                    row = st.make_row(cmd.get("model"))
                    st.reserved[row["id"]] = row
                    ids.append(row["id"])
                out["ids"] = ids
            elif op == "publish":
                for rid in cmd["ids"]:
                    st.rows[rid] = st.reserved.pop(rid)
                    st.queue_push(st.rows[rid])
            elif op == "skip":
                n = cmd.get("count", 1)
                out["ids"] = list(range(st.next_id, st.next_id + min(n, 10000)))
                st.next_id += cmd.get("count", 1)
            elif op == "delete":
                for rid in cmd["ids"]:
                    st.rows.pop(rid, None)
            elif op == "fault":
                for _ in range(cmd.get("count", 1)):
                    st.faults.append(dict(cmd))
            elif op == "clear_faults":
                st.faults = []
            elif op == "set":
                if "legacy" in cmd:
                    st.legacy = bool(cmd["legacy"])
                if "password" in cmd:
                    st.password = cmd["password"]
                if "session_valid" in cmd:
                    st.session_valid = bool(cmd["session_valid"])
                if "reset_lockout" in cmd:
                    st.failed_logins, st.lockout_until = 0, 0
                if "ir_model_access" in cmd:
                    st.ir_model_access = bool(cmd["ir_model_access"])
                if "hang" in cmd:
                    st.hang = float(cmd["hang"])
                if "search_read_delay" in cmd:
                    st.search_read_delay = float(cmd["search_read_delay"])
                if "push_url" in cmd:
                    st.push_url = cmd["push_url"] or None
                if "push_key" in cmd:
                    st.push_key = cmd["push_key"] or None
            elif op == "add_user":
                # An Odoo user who can log in (common.authenticate).
                st.users[cmd["login"]] = (cmd["password"], cmd["uid"])
            elif op == "webhook_configs":
                out["configs"] = [st.configs[i] for i in sorted(st.configs)]
            elif op == "add_webhook_config":
                # A configuration exactly as given (no validation), e.g. an existing one.
                row = {"name": False, "model_id": False, "model_name": False, "enabled": True,
                       "priority": "medium", "category": "business", "events": "create,write,unlink"}
                row.update(cmd.get("row") or {})
                m = IR_BY_MODEL.get(row["model_name"]) if isinstance(row["model_name"], str) else None
                if m and not row["model_id"]:
                    row["model_id"] = [m["id"], m["name"]]
                if not row["name"]:
                    row["name"] = "Webhook Config - %s" % (m["name"] if m else row["model_name"])
                row["display_name"] = row["name"]
                rid = row.get("id") or st.next_config_id
                row["id"] = rid
                st.next_config_id = max(st.next_config_id, rid + 1)
                st.configs[rid] = row
                out["id"] = rid
            elif op == "clear_webhook_configs":
                st.configs = {}
            elif op == "pushes":
                out["pushes"] = list(st.push_log)
            elif op == "stats":
                out.update(requests=st.requests, search_reads=st.search_reads, rows=len(st.rows),
                           max_id=st.next_id - 1, faults_pending=len(st.faults),
                           failed_logins=st.failed_logins, logins=st.logins,
                           search_reads_started=st.search_reads_started)
            else:
                out = {"ok": False, "error": "unknown op %r" % op}
        self.send_body(200 if out.get("ok") else 400, json.dumps(out).encode())


def generator(rate):
    while True:
        time.sleep(random.expovariate(rate))
        with STATE.lock:
            row = STATE.make_row()
            STATE.rows[row["id"]] = row
            STATE.queue_push(row)


def main():
    global STATE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8069)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--db", default="odoo")
    ap.add_argument("--login", default="bridgecore")
    ap.add_argument("--password", default="bc-api-key")
    ap.add_argument("--generate", type=float, default=0, help="random events per second")
    ap.add_argument("--push-url", help="push each new row to this URL (the doorbell) after it is committed")
    ap.add_argument("--push-key", help="the X-API-Key of the pushes")
    ap.add_argument("--databases", type=int, default=0,
                    help="also serve N more databases, named DB_1 to DB_N, each with its own log")
    opts = ap.parse_args()
    STATE = State(opts.db, opts.login, opts.password)
    STATES[opts.db] = STATE
    for i in range(1, opts.databases + 1):
        STATES["%s_%d" % (opts.db, i)] = State("%s_%d" % (opts.db, i), opts.login, opts.password)
    STATE.push_url, STATE.push_key = opts.push_url, opts.push_key
    threading.Thread(target=pusher, daemon=True).start()
    # A listen backlog like a production server's (socketserver's default is 5):
    # pollers that run many instances connect to all of them at once, and
    # connections beyond a full backlog would wait for the server until
    # their request timeout.
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer((opts.host, opts.port), Handler)
    server.daemon_threads = True
    if opts.generate > 0:
        threading.Thread(target=generator, args=(opts.generate,), daemon=True).start()
    print("odoo stand-in listening on %s:%d" % (opts.host, server.server_address[1]), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
