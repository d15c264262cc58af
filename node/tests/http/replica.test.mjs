// An embedded replica of @libsql/client (a `file:` URL with `syncUrl`),
// unchanged, against a real Quorumlite cluster (issue 23).
//
// node/tests/replica.rs starts the cluster and runs one scenario per process:
//
//     node replica.test.mjs <scenario>
//
// with QL_SYNC_URL (a node's HTTP URL), QL_REPLICA (the replica's file) and,
// when the nodes check tokens, QL_AUTH_TOKEN. The script holds the replica
// and does what an application does. What happens on the cluster (writes
// through the Rust client, linearizable reads, killing the leader, a
// restore) is asked of the test, one JSON line each way:
//
//     stdout  @ql {"ask": "write", "sql": ["INSERT ..."]}   a request
//     stdin   {"version": 7}                                its answer
//     stdout  @ql {"done": {...}}                           facts the test checks
//
// Lines without the `@ql ` mark are not part of the conversation (the
// native library logs to stdout). A failed assertion exits non-zero, the
// error on stderr. After the script exits, the test compares the replica's
// file with the nodes' databases page for page (the replica digest).
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { createClient } from "@libsql/client";

const SCENARIO = process.argv[2];
const SYNC_URL = process.env.QL_SYNC_URL;
const REPLICA = process.env.QL_REPLICA;
const AUTH_TOKEN = process.env.QL_AUTH_TOKEN || undefined;

const MARK = "@ql ";
const stdin = createInterface({ input: process.stdin });
const answers = stdin[Symbol.asyncIterator]();

function say(message) {
  process.stdout.write(MARK + JSON.stringify(message) + "\n");
}

/** Ask the test to act on the cluster; its answer. */
async function ask(what, args = {}) {
  say({ ask: what, ...args });
  const { value, done } = await answers.next();
  assert.ok(!done, `the test hung up when asked to ${what}`);
  return JSON.parse(value);
}

/** Rows of a linearizable read on the cluster, as arrays. */
async function clusterRows(sql) {
  return (await ask("query", { sql })).rows;
}

/** Rows of `sql` through `client` (the replica, or one of its transactions), as arrays. */
async function rowsOf(client, sql, args = []) {
  const rs = await client.execute({ sql, args });
  return rs.rows.map((row) => Array.from(row));
}

/** What went wrong in `action`, or undefined if nothing did. */
async function failure(action) {
  try {
    await action();
    return undefined;
  } catch (e) {
    return e;
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function openReplica(options = {}) {
  return createClient({
    url: pathToFileURL(REPLICA).href,
    syncUrl: SYNC_URL,
    authToken: AUTH_TOKEN,
    ...options,
  });
}

// The table the test creates; no blob column, so rows compare as JSON.
const POSTS = "SELECT id, title, length(body) FROM posts ORDER BY id";
const countOf = (where) => `SELECT count(*) FROM posts WHERE ${where}`;

/** A new replica: empty until its first sync, then the cluster's rows, read from its own file. */
async function firstSync() {
  assert.ok(!existsSync(REPLICA), `${REPLICA} should not exist yet`);
  const db = openReplica();
  assert.deepEqual(await rowsOf(db, "SELECT name FROM sqlite_schema"), [], "nothing before the first sync");
  const synced = await db.sync();
  const rows = await rowsOf(db, POSTS);
  assert.ok(rows.length > 0, "the test writes posts first");
  assert.deepEqual(rows, await clusterRows(POSTS));
  db.close();
  return { frame_no: synced.frame_no, rows: rows.length };
}

/** An existing replica reopened (the application restarted): it holds what it had, and syncs on from there. */
async function resync() {
  assert.ok(existsSync(REPLICA), `${REPLICA} should exist`);
  const db = openReplica();
  const [[held]] = await rowsOf(db, "SELECT count(*) FROM posts");
  const synced = await db.sync();
  const rows = await rowsOf(db, POSTS);
  assert.deepEqual(rows, await clusterRows(POSTS));
  db.close();
  return { frame_no: synced.frame_no, held, rows: rows.length };
}

/** From an empty cluster on, each sync brings the batches written since the last; the frame number grows with them. */
async function incremental() {
  const db = openReplica();
  const empty = await db.sync();
  const rounds = [];
  const round = async (name, writes) => {
    let version;
    for (const sql of writes) {
      ({ version } = await ask("write", { sql }));
    }
    const synced = await db.sync();
    assert.deepEqual(await rowsOf(db, POSTS), await clusterRows(POSTS), `after ${name}`);
    rounds.push({ name, version, frame_no: synced.frame_no });
  };
  await round("the first batch", [
    [
      "CREATE TABLE posts(id INTEGER PRIMARY KEY, title TEXT NOT NULL, body BLOB)",
      "INSERT INTO posts(title) VALUES ('first')",
    ],
  ]);
  await round("one batch of ten rows", [
    Array.from({ length: 10 }, (_, i) => `INSERT INTO posts(title) VALUES ('ten ${i}')`),
  ]);
  await round("five batches", Array.from({ length: 5 }, (_, i) => [`INSERT INTO posts(title) VALUES ('five ${i}')`]));
  // ~4.5 MB: more frames than one reply carries and the replica buffers,
  // and a batch the cluster replicates in parts.
  await round("a batch of many pages", [
    [
      "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 1500) " +
        "INSERT INTO posts(title, body) SELECT 'big ' || n, randomblob(3000) FROM s",
    ],
  ]);
  for (let i = 1; i < rounds.length; i++) {
    assert.ok(rounds[i].frame_no > rounds[i - 1].frame_no, `the frame number grows: ${JSON.stringify(rounds)}`);
  }
  const again = await db.sync();
  assert.equal(again.frame_no, rounds.at(-1).frame_no, "a sync with nothing new stays where it was");
  db.close();
  return { empty: empty.frame_no ?? null, rounds };
}

/** Writes go to the cluster through the replica, which reads them back from its own file as soon as they return. */
async function readYourWrites() {
  const db = openReplica();
  await db.sync();
  for (let i = 1; i <= 10; i++) {
    const title = `from the replica ${i}`;
    const rs = await db.execute({ sql: "INSERT INTO posts(title) VALUES (?)", args: [title] });
    assert.equal(rs.rowsAffected, 1);
    const mine = await rowsOf(db, "SELECT id FROM posts WHERE title = ?", [title]);
    assert.deepEqual(mine, [[Number(rs.lastInsertRowid)]], `write ${i} is in the replica's file once it returns`);
  }
  // Schema changes, named parameters and every value type, through the
  // proxy and back from the replica's pages.
  await db.execute("CREATE TABLE vals(id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, n)");
  await db.execute({
    sql: "INSERT INTO vals(i, r, t, b, n) VALUES (:i, :r, :t, :b, :n)",
    args: { i: -9007199254740991n, r: 2.5, t: "héllo ☃", b: new Uint8Array([0, 1, 254, 255]).buffer, n: null },
  });
  const VALS = "SELECT i, r, t, hex(b), n FROM vals";
  assert.deepEqual(await rowsOf(db, VALS), [[-9007199254740991, 2.5, "héllo ☃", "0001FEFF", null]]);
  assert.deepEqual(await clusterRows(VALS), await rowsOf(db, VALS));
  // A refused write comes back as the cluster's SQLite error, and changes nothing.
  await assert.rejects(db.execute("INSERT INTO posts(id, title) VALUES (1, 'duplicate')"), /UNIQUE constraint failed/);
  await db.sync();
  const MINE = "SELECT title FROM posts WHERE title LIKE 'from the replica %' ORDER BY id";
  const mine = await rowsOf(db, MINE);
  assert.deepEqual(mine, await clusterRows(MINE));
  assert.deepEqual(await rowsOf(db, POSTS), await clusterRows(POSTS));
  db.close();
  return { written: mine.length };
}

/** Interactive transactions and batches through the replica run on the cluster, and commit or roll back as a whole. */
async function transactions() {
  const db = openReplica();
  await db.sync();

  const tx = await db.transaction("write");
  await tx.execute("INSERT INTO posts(title) VALUES ('tx a')");
  await tx.execute({ sql: "INSERT INTO posts(title) VALUES (?)", args: ["tx b"] });
  assert.deepEqual(await rowsOf(tx, countOf("title LIKE 'tx %'")), [[2]], "the transaction reads its own writes");
  assert.deepEqual(await clusterRows(countOf("title LIKE 'tx %'")), [[0]], "nothing is visible before COMMIT");
  await tx.commit();
  assert.deepEqual(await rowsOf(db, countOf("title LIKE 'tx %'")), [[2]], "the replica holds the commit once it returns");

  const before = await rowsOf(db, POSTS);
  const undone = await db.transaction("write");
  await undone.execute("DELETE FROM posts");
  await undone.execute("INSERT INTO posts(title) VALUES ('rolled back')");
  assert.deepEqual(await rowsOf(undone, "SELECT count(*) FROM posts"), [[1]]);
  await undone.rollback();
  assert.deepEqual(await rowsOf(db, POSTS), before, "a rolled back transaction leaves nothing");
  assert.deepEqual(await clusterRows(POSTS), before);

  const results = await db.batch(
    [
      "INSERT INTO posts(title) VALUES ('batch 1')",
      { sql: "INSERT INTO posts(title) VALUES (?)", args: ["batch 2"] },
      countOf("title LIKE 'batch %'"),
    ],
    "write",
  );
  assert.deepEqual(Array.from(results[2].rows[0]), [2]);
  assert.deepEqual(await rowsOf(db, countOf("title LIKE 'batch %'")), [[2]]);
  await assert.rejects(
    db.batch(
      ["INSERT INTO posts(title) VALUES ('batch 3')", "INSERT INTO posts(id, title) VALUES (1, 'duplicate')"],
      "write",
    ),
    /UNIQUE constraint failed/,
  );
  assert.deepEqual(await rowsOf(db, countOf("title = 'batch 3'")), [[0]], "a failed batch leaves nothing");
  assert.deepEqual(await clusterRows(countOf("title = 'batch 3'")), [[0]]);

  // The cluster takes writes again: no transaction was left open on it.
  await db.execute("INSERT INTO posts(title) VALUES ('after the batches')");
  await db.sync();
  assert.deepEqual(await rowsOf(db, POSTS), await clusterRows(POSTS));
  db.close();
  return {};
}

/** With `syncInterval`, a write made on the cluster shows up in the replica without a call to sync(). */
async function syncInterval() {
  const db = openReplica({ syncInterval: 1 });
  const periodic = countOf("title = 'periodic'");
  const seen = async () => {
    // The first periodic sync may not have brought the table yet.
    try {
      return (await rowsOf(db, periodic))[0][0] > 0;
    } catch (e) {
      if (/no such table/.test(e.message)) {
        return false;
      }
      throw e;
    }
  };
  const { version } = await ask("write", { sql: ["INSERT INTO posts(title) VALUES ('periodic')"] });
  const started = Date.now();
  while (!(await seen())) {
    assert.ok(Date.now() - started < 15_000, "the periodic sync did not bring the write within 15 s");
    await sleep(50);
  }
  const seenAfterMs = Date.now() - started;
  db.close();
  return { version, seen_after_ms: seenAfterMs };
}

/** A token the nodes do not know (or none, when they check tokens) is refused before anything is synced. */
async function wrongToken() {
  const error = await failure(async () => {
    // @libsql/client asks the node's /info with the token as it opens the replica.
    const db = openReplica();
    await db.sync();
    db.close();
  });
  assert.ok(error, "a replica with a wrong token must be refused");
  return { message: String(error.message ?? error) };
}

/** A token with the read permission only: the replica syncs, and its writes are refused. */
async function readToken() {
  const db = openReplica();
  await db.sync();
  assert.deepEqual(await rowsOf(db, POSTS), await clusterRows(POSTS), "a read token may sync");
  const error = await failure(() => db.execute("INSERT INTO posts(title) VALUES ('not allowed')"));
  assert.ok(error, "a read token may not write through the replica");
  await db.sync();
  assert.deepEqual(await rowsOf(db, countOf("title = 'not allowed'")), [[0]]);
  db.close();
  return { write_error: String(error.message ?? error) };
}

/** Growth, deletes (free pages, a smaller file) and a VACUUM (a new image of every page) reach the replica. */
async function pages() {
  const db = openReplica();
  await db.sync();
  const steps = {
    grow: [
      "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 400) " +
        "INSERT INTO posts(title, body) SELECT 'grown ' || n, randomblob(2000) FROM s",
      "CREATE INDEX posts_title ON posts(title)",
    ],
    shrink: ["DELETE FROM posts WHERE id % 3 = 0", "UPDATE posts SET body = randomblob(500) WHERE id % 3 = 1"],
    vacuum: ["VACUUM"],
    "write after the vacuum": ["INSERT INTO posts(title) VALUES ('after the vacuum')"],
  };
  const done = [];
  for (const [step, sql] of Object.entries(steps)) {
    const { version } = await ask("write", { sql });
    const synced = await db.sync();
    assert.deepEqual(await rowsOf(db, POSTS), await clusterRows(POSTS), `after ${step}`);
    done.push({ step, version, frame_no: synced.frame_no });
  }
  db.close();
  return { steps: done };
}

/** The leader is killed while the replica writes and syncs through a follower: it goes on, and loses nothing. */
async function killLeader() {
  const db = openReplica();
  await db.sync();
  let failures = 0;
  // Until a new leader is elected, writes and syncs fail; each is retried.
  // A write whose answer was lost may have landed: INSERT OR IGNORE makes
  // its retry harmless.
  const retrying = async (what, action) => {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        return await action();
      } catch (e) {
        failures++;
        if (Date.now() > deadline) {
          throw new Error(`${what} still failing after 30 s: ${e.message}`);
        }
        await sleep(200);
      }
    }
  };
  const ids = [];
  const write = async (id) => {
    await retrying(`write ${id}`, () =>
      db.execute({ sql: "INSERT OR IGNORE INTO posts(id, title) VALUES (?, ?)", args: [id, `survivor ${id}`] }),
    );
    ids.push(id);
    assert.deepEqual(await rowsOf(db, "SELECT id FROM posts WHERE id = ?", [id]), [[id]], `read-your-writes for ${id}`);
  };
  let id = 1_000_000;
  for (let i = 0; i < 5; i++) {
    await write(++id);
  }
  const { killed } = await ask("kill_leader", { after_ms: 300 });
  // Past the kill and the election that follows: at least 3 s of writes.
  const until = Date.now() + 3_000;
  for (let i = 0; i < 30 || Date.now() < until; i++) {
    await write(++id);
    await retrying("sync", () => db.sync());
    await sleep(50);
  }
  const SURVIVORS = "SELECT id FROM posts WHERE title LIKE 'survivor %' ORDER BY id";
  const local = await rowsOf(db, SURVIVORS);
  assert.deepEqual(local, ids.map((i) => [i]));
  assert.deepEqual(await clusterRows(SURVIVORS), local);
  assert.deepEqual(await rowsOf(db, POSTS), await clusterRows(POSTS));
  db.close();
  return { killed, written: ids.length, failures };
}

/** A restore starts a new lineage: the replica starts over from the restored image, and goes on from there. */
async function restore() {
  const db = openReplica();
  await db.sync();
  const [[held]] = await rowsOf(db, "SELECT count(*) FROM posts");
  assert.ok(held > 0, "the test writes posts first");
  const restored = await ask("restore", { rows: 300 });
  const synced = await db.sync();
  assert.deepEqual(await rowsOf(db, "SELECT name FROM sqlite_schema WHERE name = 'posts'"), [], "the old table is gone");
  assert.deepEqual(await rowsOf(db, "SELECT count(*) FROM restored"), [[restored.rows]]);
  await db.execute("INSERT INTO restored(v) VALUES ('after the restore')");
  assert.deepEqual(await rowsOf(db, "SELECT count(*) FROM restored"), [[restored.rows + 1]], "writes go on");
  const RESTORED = "SELECT id, v FROM restored ORDER BY id";
  assert.deepEqual(await rowsOf(db, RESTORED), await clusterRows(RESTORED));
  db.close();
  return { version: restored.version, frame_no: synced.frame_no };
}

const SCENARIOS = {
  "first-sync": firstSync,
  resync,
  incremental,
  "read-your-writes": readYourWrites,
  transactions,
  "sync-interval": syncInterval,
  "wrong-token": wrongToken,
  "read-token": readToken,
  pages,
  "kill-leader": killLeader,
  restore,
};

const scenario = SCENARIOS[SCENARIO];
if (!scenario) {
  console.error(`usage: node replica.test.mjs <${Object.keys(SCENARIOS).join("|")}>`);
  process.exit(2);
}
assert.ok(SYNC_URL && REPLICA, "QL_SYNC_URL and QL_REPLICA must be set");
try {
  say({ done: await scenario() });
} catch (e) {
  console.error(`scenario ${SCENARIO} failed:`, e);
  process.exitCode = 1;
} finally {
  stdin.close();
}
// The native library's periodic sync (syncInterval) would keep running.
process.exit();
