mod common;
use common::Pair;
use storage::Value;

#[test]
fn a_captured_insert_applies_on_both_nodes() {
    let mut p = Pair::new();
    p.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
    let out = p.exec("INSERT INTO t(v) VALUES ('hello')");
    assert_eq!(out.batch.as_ref().map(|b| b.version()), Some(2));
    for n in [&p.leader, &p.replica] {
        assert_eq!(
            n.query("SELECT id, v FROM t"),
            vec![vec![Value::Integer(1), Value::Text("hello".into())]]
        );
    }
    p.assert_identical();
}
