"""The package's modules import each other without cycles (tests/import_graph.py)."""

from import_graph import cycles, import_graph, layers


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert cycles(graph) == []
    depth = layers(graph)
    assert depth["streamkd.cli"] == max(depth.values())  # the command line sits on top
    assert depth["streamkd.data.loaders"] < depth["streamkd.distill.teacher_cache"]
    assert depth["streamkd.results.aggregate"] < depth["streamkd.results.tables"]


def test_a_cycle_through_a_deferred_import_is_found(tmp_path):
    package = tmp_path / "streamkd"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "a.py").write_text("from streamkd.sub.b import thing\n")
    (package / "sub" / "b.py").write_text("def thing():\n    from streamkd.sub import a\n")
    (package / "c.py").write_text("import streamkd.sub.a\n")
    assert cycles(import_graph(package)) == [["streamkd.sub.a", "streamkd.sub.b"]]
