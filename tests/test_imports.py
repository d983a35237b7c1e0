"""The import graph of ttcjax, read from the source (no module is run):
nothing imports the entry points, and no import cycles."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _modules():
  out = {}
  for folder, _, files in os.walk(os.path.join(ROOT, "ttcjax")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        out[module.removesuffix(".__init__")] = path
  return out


def _imports(path, modules):
  """ttcjax modules `path` imports, at any level (lazy imports too)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name in modules)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      subs = [f"{node.module}.{a.name}" for a in node.names]
      found.update(s for s in subs if s in modules)
      if node.module in modules and not all(s in modules for s in subs):
        found.add(node.module)
  return found


def _graph():
  modules = _modules()
  graph = {}
  for module, path in modules.items():
    # Importing a submodule runs its packages' __init__: not a cycle.
    graph[module] = {d for d in _imports(path, modules)
                     if d != module and not module.startswith(d + ".")}
  return graph


def _cycles(graph):
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = set()
      while True:
        w = stack.pop()
        on.discard(w)
        component.add(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(component)

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_the_cycle_finder_finds_a_cycle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _cycles(graph) == [{"a", "b", "c"}]
  assert _cycles({"a": {"b"}, "b": set()}) == []


def test_nothing_outside_main_imports_the_entry_points():
  graph = _graph()
  bad = {m: sorted(d for d in deps if d.startswith("ttcjax.main"))
         for m, deps in graph.items() if not m.startswith("ttcjax.main")}
  assert not {m: d for m, d in bad.items() if d}


def test_search_imports_no_analysis():
  """`search` is core: its records take the FLOPs counter as an argument."""
  graph = _graph()
  bad = {m: sorted(d for d in deps if d.startswith("ttcjax.analysis"))
         for m, deps in graph.items() if m.startswith("ttcjax.search")}
  assert not {m: d for m, d in bad.items() if d}


def test_no_import_cycles():
  """Not even through lazy (function-level) imports."""
  cycles = _cycles(_graph())
  assert not cycles, f"import cycles: {[sorted(c) for c in cycles]}"
