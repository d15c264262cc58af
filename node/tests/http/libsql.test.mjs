// @libsql/client, unchanged, against a real Quorumlite cluster.
// node/tests/http_api.rs starts three nodes and runs this file with
// QL_LEADER and QL_FOLLOWER set to two nodes' HTTP URLs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { createClient } from "@libsql/client";

const LEADER = process.env.QL_LEADER;
const FOLLOWER = process.env.QL_FOLLOWER;
assert.ok(LEADER && FOLLOWER, "QL_LEADER and QL_FOLLOWER must be set");

const TOKEN = "x-quorumlite-token";

// The documented way to get read-your-writes on any node: a fetch that
// remembers the newest token and sends it with every request.
function sessionFetch() {
  const session = { token: undefined };
  const fetchWithToken = async (request) => {
    if (session.token !== undefined) {
      request.headers.set(TOKEN, session.token);
    }
    const response = await fetch(request);
    const token = response.headers.get(TOKEN);
    if (token) {
      session.token = token;
    }
    return response;
  };
  return { session, fetch: fetchWithToken };
}

function version(token) {
  return BigInt(token.split(".").pop());
}

const leader = createClient({ url: LEADER, intMode: "bigint" });
const follower = createClient({ url: FOLLOWER, intMode: "bigint" });

test("execute binds positional and named arguments of every value type", async () => {
  await leader.execute("CREATE TABLE vals(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n, flag INTEGER)");
  const blob = new Uint8Array([0, 1, 2, 250, 255]);
  const big = 9007199254740993n; // beyond 2^53: must survive as a 64-bit integer
  const ins = await leader.execute({
    sql: "INSERT INTO vals(i, r, t, b, n, flag) VALUES (?, ?, ?, ?, ?, ?)",
    args: [big, 2.5, "héllo ☃", blob, null, true],
  });
  assert.equal(ins.rowsAffected, 1);
  assert.equal(ins.lastInsertRowid, 1n);
  const named = await leader.execute({
    sql: "INSERT INTO vals(i, r, t, b, n, flag) VALUES (:i, @r, $t, :b, :n, :f)",
    args: { i: -7n, r: -0.125, t: "", b: new Uint8Array([]), n: null, f: false },
  });
  assert.equal(named.lastInsertRowid, 2n);
  const rs = await leader.execute("SELECT i, r, t, b, n, flag FROM vals ORDER BY id");
  assert.deepEqual(rs.columns, ["i", "r", "t", "b", "n", "flag"]);
  assert.deepEqual(rs.columnTypes, ["INTEGER", "REAL", "TEXT", "BLOB", "", "INTEGER"]);
  const [a, b] = rs.rows;
  assert.equal(a.i, big);
  assert.equal(a.r, 2.5);
  assert.equal(a.t, "héllo ☃");
  assert.deepEqual(new Uint8Array(a.b), blob);
  assert.equal(a.n, null);
  assert.equal(a.flag, 1n);
  assert.equal(b.i, -7n);
  assert.equal(b.r, -0.125);
  assert.equal(b.t, "");
  assert.equal(b.flag, 0n);
});

test("a write batch is atomic: a failing statement rolls the whole batch back", async () => {
  await leader.execute("CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL CHECK (bal >= 0))");
  const ok = await leader.batch(
    [
      "INSERT INTO acct VALUES (1, 100)",
      { sql: "INSERT INTO acct VALUES (?, ?)", args: [2, 50] },
      "SELECT sum(bal) AS total FROM acct",
    ],
    "write",
  );
  assert.equal(ok.length, 3);
  assert.equal(ok[2].rows[0].total, 150n);
  await assert.rejects(
    leader.batch(
      [
        "UPDATE acct SET bal = bal + 500 WHERE id = 2",
        "UPDATE acct SET bal = bal - 500 WHERE id = 1", // violates the CHECK
      ],
      "write",
    ),
    (e) => e.code === "SQLITE_CONSTRAINT",
  );
  const rs = await leader.execute("SELECT id, bal FROM acct ORDER BY id");
  assert.deepEqual(rs.rows.map((r) => [r.id, r.bal]), [[1n, 100n], [2n, 50n]]);
});

test("a read batch runs its reads together and refuses writes", async () => {
  const rs = await follower.batch(["SELECT count(*) AS n FROM acct", "SELECT max(bal) AS m FROM acct"], "read");
  assert.equal(rs[0].rows[0].n, 2n);
  assert.equal(rs[1].rows[0].m, 100n);
  await assert.rejects(follower.batch(["DELETE FROM acct"], "read"), (e) => e.code === "SQLITE_READONLY");
  assert.equal((await leader.execute("SELECT count(*) AS n FROM acct")).rows[0].n, 2n);
});

test("an interactive transaction reads its own writes, commits, and rolls back", async () => {
  await leader.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT UNIQUE)");
  const tx = await leader.transaction("write");
  await tx.execute("INSERT INTO items(name) VALUES ('a')");
  await tx.execute({ sql: "INSERT INTO items(name) VALUES (?)", args: ["b"] });
  const inside = await tx.execute("SELECT count(*) AS n FROM items");
  assert.equal(inside.rows[0].n, 2n);
  // Not visible outside before COMMIT.
  const outside = await follower.execute("SELECT count(*) AS n FROM items");
  assert.equal(outside.rows[0].n, 0n);
  // A failing statement leaves the transaction usable.
  await assert.rejects(tx.execute("INSERT INTO items(name) VALUES ('a')"), (e) => e.code === "SQLITE_CONSTRAINT");
  await tx.execute("INSERT INTO items(name) VALUES ('c')");
  await tx.commit();
  assert.equal((await follower.execute("SELECT count(*) AS n FROM items")).rows[0].n, 3n);

  const tx2 = await leader.transaction("write");
  await tx2.execute("DELETE FROM items");
  assert.equal((await tx2.execute("SELECT count(*) AS n FROM items")).rows[0].n, 0n);
  await tx2.rollback();
  assert.equal((await leader.execute("SELECT count(*) AS n FROM items")).rows[0].n, 3n);
});

test("a transaction started through a follower runs on the leader", async () => {
  const tx = await follower.transaction("write");
  await tx.execute("INSERT INTO items(name) VALUES ('via-follower')");
  const rs = await tx.execute("SELECT name FROM items WHERE name = 'via-follower'");
  assert.equal(rs.rows.length, 1);
  await tx.commit();
  const after = await leader.execute("SELECT count(*) AS n FROM items WHERE name = 'via-follower'");
  assert.equal(after.rows[0].n, 1n);
});

test("executeMultiple runs a script, triggers included", async () => {
  await leader.executeMultiple(`
    CREATE TABLE log(id INTEGER PRIMARY KEY, what TEXT);
    CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT);
    CREATE TRIGGER note_log AFTER INSERT ON notes BEGIN
      INSERT INTO log(what) VALUES ('note ' || new.id);
    END;
    INSERT INTO notes(body) VALUES ('x; y'); -- a ; inside a string
    INSERT INTO notes(body) VALUES ('z');
  `);
  const rs = await leader.execute("SELECT what FROM log ORDER BY id");
  assert.deepEqual(rs.rows.map((r) => r.what), ["note 1", "note 2"]);
});

test("migrate applies a schema change atomically", async () => {
  const rs = await leader.migrate([
    "CREATE TABLE users(id INTEGER PRIMARY KEY, email TEXT)",
    "CREATE TABLE posts(id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), title TEXT)",
    "INSERT INTO users VALUES (1, 'a@example.com')",
    "INSERT INTO posts VALUES (1, 1, 'hello')",
  ]);
  assert.equal(rs.length, 4);
  await assert.rejects(
    leader.migrate(["ALTER TABLE users ADD COLUMN name TEXT", "INSERT INTO nowhere VALUES (1)"]),
    (e) => e.code === "SQLITE_ERROR",
  );
  const cols = await leader.execute("SELECT name FROM pragma_table_info('users')");
  assert.deepEqual(cols.rows.map((r) => r.name), ["id", "email"]);
});

test("a constraint error carries its SQLite code", async () => {
  await assert.rejects(leader.execute("INSERT INTO users VALUES (1, 'dup')"), (e) => {
    assert.equal(e.code, "SQLITE_CONSTRAINT");
    assert.match(e.message, /UNIQUE constraint failed/);
    return true;
  });
  await assert.rejects(leader.execute("SELEC 1"), (e) => e.code === "SQLITE_ERROR" && /syntax error/.test(e.message));
});

test("a write sent to a follower commits once, through the leader", async () => {
  const rs = await follower.execute("INSERT INTO users(email) VALUES ('follower@example.com')");
  assert.equal(rs.rowsAffected, 1);
  const n = await leader.execute("SELECT count(*) AS n FROM users WHERE email = 'follower@example.com'");
  assert.equal(n.rows[0].n, 1n);
});

test("read-your-writes on a follower through the token header", async () => {
  const { session, fetch: tokenFetch } = sessionFetch();
  const writer = createClient({ url: LEADER, intMode: "bigint", fetch: tokenFetch });
  const reader = createClient({ url: FOLLOWER, intMode: "bigint", fetch: tokenFetch });
  await writer.execute("CREATE TABLE ryw(v INTEGER)");
  for (let i = 1n; i <= 20n; i++) {
    await writer.execute({ sql: "INSERT INTO ryw VALUES (?)", args: [i] });
    const written = version(session.token);
    // The follower serves this read at `session` consistency, at least at the write's version.
    const rs = await reader.execute("SELECT max(v) AS m FROM ryw");
    assert.equal(rs.rows[0].m, i);
    assert.ok(version(session.token) >= written, "the read's token is not older than the write's");
  }
  // A token from another cluster is refused with a clear error.
  const alien = createClient({
    url: FOLLOWER,
    fetch: async (request) => {
      request.headers.set(TOKEN, "ql1.00000000000000000000000000000000.5");
      return fetch(request);
    },
  });
  await assert.rejects(alien.execute("SELECT 1"), (e) => e.code === "LINEAGE_MISMATCH");
});

test("random() and datetime('now') are computed once and replicated", async () => {
  await leader.execute("CREATE TABLE nd(r INTEGER, t TEXT)");
  await leader.execute("INSERT INTO nd VALUES (random(), datetime('now'))");
  const a = await leader.execute("SELECT r, t FROM nd");
  const b = await follower.execute("SELECT r, t FROM nd");
  assert.deepEqual(a.rows[0].r, b.rows[0].r);
  assert.equal(a.rows[0].t, b.rows[0].t);
});
