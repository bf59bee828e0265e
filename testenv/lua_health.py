"""Runs an Argo CD health check (Lua) on objects, as Argo CD does: the object is the
global `obj`, the script returns a table with `status` and `message`.

Reads {"script": <path>, "objects": [...]} as JSON on stdin, prints a JSON list of
{"status", "message"}. Runs with the tools virtualenv (lupa, Lua 5.4).
"""

import json
import sys

from lupa import lua54


def to_lua(lua, value):
    if isinstance(value, dict):
        return lua.table_from({k: to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([to_lua(lua, v) for v in value])
    return value


def main():
    request = json.load(sys.stdin)
    with open(request["script"]) as f:
        script = f.read()
    results = []
    for obj in request["objects"]:
        lua = lua54.LuaRuntime(unpack_returned_tuples=True)
        lua.globals().obj = to_lua(lua, obj)
        hs = lua.execute(script)
        results.append({"status": hs["status"], "message": hs["message"]})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
