"""OpenAssistant message trees: every root-to-leaf path is one conversation.

Accepted shapes: export trees (``{"message_tree_id", "prompt": {..., "replies": [...]}}``),
nested message roots (``{"message_id", "replies": [...]}``) and flat message tables
(``message_id``/``parent_id``, or the seed data's ``user_message_id``/``parent_message_id``),
which are gathered over the whole file first. Deleted messages and their replies are left out;
a path's trailing prompter turns are cut (nothing to train on); a path with no assistant turn, or
one that is then a prefix of another path, gives no record. ``--oasst-best`` keeps one path per tree, following the best-ranked reply
(rank 0 first; unranked replies after ranked ones, in file order). All paths of a tree share
``group`` (the tree id); ``id`` is the last message's id; the path's message ids and per-message
fields (rank, lang, emojis, ...) go to meta.
"""

from __future__ import annotations

from typing import Any

from ._base import Options, RowProblem, make_message, normalize_role, record

NAME = "oasst"
_ID_KEYS = ("message_id", "user_message_id")
_PARENT_KEYS = ("parent_id", "parent_message_id")
_OWN = ("text", "role", "replies", "message_id", "parent_id")


def matches(row: Any) -> bool:
    return isinstance(row, dict) and (
        isinstance(row.get("prompt"), dict) and "message_tree_id" in row
        or "replies" in row and "message_id" in row
        or is_flat(row)
    )


def is_flat(row: Any) -> bool:
    return (
        isinstance(row, dict) and "replies" not in row and "text" in row and "role" in row
        and any(k in row for k in _ID_KEYS) and any(k in row for k in _PARENT_KEYS)
    )


def to_records(row: dict[str, Any], opts: Options) -> list[dict[str, Any]]:
    """A nested tree row (export tree or message root)."""
    if isinstance(row.get("prompt"), dict):
        root, tree_id = row["prompt"], row.get("message_tree_id")
        tree_fields = {k: v for k, v in row.items() if k not in ("prompt", "message_tree_id")}
        where = "prompt"
    else:
        root, tree_id, tree_fields, where = row, row.get("message_id"), {}, ""
    return tree_records(root, tree_id, tree_fields, where, opts)


def flat_to_records(rows: list[dict[str, Any]], opts: Options) -> list[dict[str, Any]]:
    """A flat message table (all rows of the file): rebuild the trees, then as above."""
    nodes: dict[str, dict[str, Any]] = {}
    for row in rows:
        mid = _first(row, _ID_KEYS)
        nodes[str(mid)] = {**row, "message_id": str(mid), "replies": []}
    roots = []
    for row in rows:
        node = nodes[str(_first(row, _ID_KEYS))]
        parent = _first(row, _PARENT_KEYS)
        if parent is None:
            roots.append(node)
        elif str(parent) in nodes:
            nodes[str(parent)]["replies"].append(node)
    out = []
    for root in roots:
        out += tree_records(root, root.get("message_tree_id") or root["message_id"], {}, "", opts)
    return out


def orphans(rows: list[dict[str, Any]]) -> list[int]:
    """Indexes of flat rows whose parent is not in the table (they cannot form a path)."""
    ids = {str(_first(r, _ID_KEYS)) for r in rows}
    return [i for i, r in enumerate(rows)
            if _first(r, _PARENT_KEYS) is not None and str(_first(r, _PARENT_KEYS)) not in ids]


_REPLY_FIX = "set parent_id to null on a tree's first prompt, or to the id of the message replied to"


def table_problems(rows: list[dict[str, Any]], places: list[str],
                   rejected: dict[str, str] | None = None) -> dict[int, RowProblem]:
    """Flat rows that no tree can hold, by index, each with its reason (L11): a message id used
    before (``places[i]`` names where, e.g. "line 3"), a message that is its own parent, parent
    ids that loop, a parent not in the table (or ``rejected``: id -> place), and every message
    below one of those. Rows not named here all hang from a root (parent_id null)."""
    rejected = rejected or {}
    problems: dict[int, RowProblem] = {}
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        mid = str(_first(row, _ID_KEYS))
        if mid in first:
            problems[i] = RowProblem("message_id", f"message id {mid!r} is already used on "
                                     f"{places[first[mid]]}",
                                     "give every message its own id, or drop the duplicate")
        else:
            first[mid] = i
    # verdict per row: None (in a tree) or (the row that is wrong, a short reason for rows below)
    verdict: dict[int, tuple[int, str] | None] = {}
    for start in range(len(rows)):
        if start in problems or start in verdict:
            continue
        walk: list[int] = []
        on_walk: dict[int, int] = {}
        j, end = start, None
        while True:
            if j in verdict:
                end = verdict[j]
                break
            parent = _first(rows[j], _PARENT_KEYS)
            if parent is None:
                break
            on_walk[j] = len(walk)
            walk.append(j)
            mid, parent = str(_first(rows[j], _ID_KEYS)), str(parent)
            if parent == mid:
                problems[j] = RowProblem("parent_id", "the message is its own parent", _REPLY_FIX)
                end = (j, "is its own parent")
            elif parent not in first:
                if parent in rejected:
                    what = f"was rejected ({rejected[parent]})"
                    problems[j] = RowProblem("parent_id", f"its parent message {parent!r} {what}",
                                             "fix that message, or drop its replies too")
                else:
                    what = "is not in the file"
                    problems[j] = RowProblem("parent_id", f"its parent message {parent!r} {what}",
                                             "include the whole tree, or drop the message")
                end = (j, f"replies to a message that {what}")
            elif first[parent] in on_walk:
                loop = walk[on_walk[first[parent]]:]
                for k, member in enumerate(loop):
                    chain = [str(_first(rows[m], _ID_KEYS)) for m in loop[k:] + loop[:k]]
                    shown = " -> ".join(chain[:6] + (["..."] if len(chain) > 6 else []))
                    problems[member] = RowProblem(
                        "parent_id", f"parent ids loop ({shown} -> {chain[0]}), so no tree holds "
                        "the message", _REPLY_FIX)
                    verdict[member] = (member, "is in a parent-id loop")
                end = verdict[loop[0]]
                walk = walk[: on_walk[first[parent]]]
                break
            else:
                j = first[parent]
                continue
            verdict[j] = end
            walk.pop()
            break
        for j in walk:
            verdict[j] = end
            if end is not None and j not in problems:
                top = str(_first(rows[end[0]], _ID_KEYS))
                problems[j] = RowProblem(
                    "parent_id", f"below message {top!r} ({places[end[0]]}), which {end[1]}, so "
                    "no tree holds the message", "fix that message, or drop its replies too")
    return problems


def message_id(row: Any) -> str | None:
    """A flat row's message id as text, or None."""
    mid = _first(row, _ID_KEYS) if isinstance(row, dict) else None
    return None if mid is None else str(mid)


def check_flat_row(row: Any) -> None:
    if not is_flat(row):
        raise RowProblem("message_id", "not a flat OASST message (needs message_id, parent_id, "
                         "text and role)", "keep one message per row, or force the format with --from")


def tree_records(root: dict[str, Any], tree_id: Any, tree_fields: dict[str, Any], where: str,
                 opts: Options) -> list[dict[str, Any]]:
    paths = [_best_path(root, where)] if opts.oasst_best else list(_all_paths(root, where))
    out, seen = [], set()
    for path in paths:
        while path and path[-1][0].get("role") == "prompter":
            path = path[:-1]
        if not path or path[-1][0].get("role") != "assistant":
            continue
        end = path[-1][0]
        # A path cut back to an assistant that other paths continue is a prefix of those
        # conversations, not a conversation of its own (unless it is the --oasst-best path).
        if id(end) in seen or (not opts.oasst_best and _assistant_below(end)):
            continue
        seen.add(id(end))
        messages = []
        for node, node_where in path:
            role = normalize_role(node.get("role"), _join(node_where, "role"), opts)
            messages.append(make_message(role, node.get("text"), _join(node_where, "text")))
        extras = {
            **tree_fields,
            "message_ids": [node.get("message_id") for node, _ in path],
            "messages": [
                {k: v for k, v in node.items() if k not in _OWN and v is not None}
                for node, _ in path
            ],
        }
        out.append(record(messages, opts, id=path[-1][0].get("message_id"), extras=extras,
                          group=tree_id))
    return out


def _all_paths(root: dict[str, Any], where: str):
    stack = [[(root, where)]]
    while stack:
        path = stack.pop()
        node, node_where = path[-1]
        if node.get("deleted"):
            path = path[:-1]
            if path:
                yield path
            continue
        replies = _replies(node, node_where)
        live = [(r, w) for r, w in replies if not r.get("deleted")]
        if not live:
            yield path
        for reply in reversed(live):  # reversed: paths come out in file order
            stack.append([*path, reply])


def _assistant_below(node: dict[str, Any]) -> bool:
    """An assistant message anywhere below ``node`` (a loop, not recursion: trees of hundreds of
    levels are read, M17)."""
    stack = [node]
    while stack:
        for reply in stack.pop().get("replies") or []:
            if isinstance(reply, dict) and not reply.get("deleted"):
                if reply.get("role") == "assistant":
                    return True
                stack.append(reply)
    return False


def _best_path(root: dict[str, Any], where: str) -> list[tuple[dict[str, Any], str]]:
    path = [(root, where)]
    while True:
        live = [(r, w) for r, w in _replies(*path[-1]) if not r.get("deleted")]
        if not live:
            return path
        order = sorted(range(len(live)), key=lambda i: (live[i][0].get("rank") is None,
                                                         live[i][0].get("rank") or 0, i))
        path.append(live[order[0]])


def _replies(node: dict[str, Any], where: str) -> list[tuple[dict[str, Any], str]]:
    replies = node.get("replies") or []
    if not isinstance(replies, list):
        raise RowProblem(_join(where, "replies"), "must be a list of messages",
                         "export the tree in OASST's format")
    return [(r, _join(where, f"replies[{i}]")) for i, r in enumerate(replies) if isinstance(r, dict)]


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if row.get(key) is not None:
            return row[key]
    return None
