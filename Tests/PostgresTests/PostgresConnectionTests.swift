import DubfarmCore
import FarmTestSupport
import Foundation
import Postgres
import Testing

@Suite("Postgres connection")
struct PostgresConnectionTests {
    @Test("typed values round-trip through parameters and rows")
    func roundTrip() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let c = try PostgresConnection(url: db.url)
        let when = Date(timeIntervalSince1970: 1_790_000_000.123456)
        let row = try c.query("""
            SELECT $1::text AS s, $2::bigint AS i, $3::float8 AS d, $4::bool AS b, $5::timestamptz AS t,
                   $6::bytea AS y, $7::jsonb AS j, $8::text AS n, array_length($9::text[], 1) AS a, ($9::text[])[2] AS a2
            """, [.text("héllo \"q\""), .int(-42), .double(2.5), .bool(true), .timestamp(when), .bytes([0, 255, 16]),
                  .json(#"{"k": 1}"#), nil, .array([.text("x"), .text("y,\"z\"}"), nil])])[0]
        #expect(try row["s"].decode(String.self) == "héllo \"q\"")
        #expect(try row["i"].decode(Int.self) == -42)
        #expect(try row["i"].decode(Int64.self) == -42)
        #expect(try row["d"].decode(Double.self) == 2.5)
        #expect(try row["b"].decode(Bool.self))
        #expect(abs(try row["t"].decode(Date.self).timeIntervalSince(when)) < 1e-5)
        #expect(try row["y"].decode([UInt8].self) == [0, 255, 16])
        #expect(try row["j"].decode(String.self) == #"{"k": 1}"#)
        #expect(try row["n"].decode(String?.self) == nil)
        #expect(throws: DubfarmError.self) { try row["n"].decode(String.self) }
        #expect(try row["a"].decode(Int.self) == 3)
        #expect(try row["a2"].decode(String.self) == "y,\"z\"}")
        #expect(throws: DubfarmError.self) { try row["nope"].decode(String?.self) }
    }

    @Test("timestamps parse in every form PostgreSQL prints")
    func dates() {
        #expect(PostgresDate.parse("1970-01-01 00:00:00+00") == Date(timeIntervalSince1970: 0))
        #expect(PostgresDate.parse("1970-01-01 01:00:00+01") == Date(timeIntervalSince1970: 0))
        #expect(PostgresDate.parse("1969-12-31 23:59:59.5+00") == Date(timeIntervalSince1970: -0.5))
        #expect(PostgresDate.parse("2000-03-01 00:00:00+05:30") == Date(timeIntervalSince1970: 951_849_000))
        #expect(PostgresDate.parse("infinity") == .distantFuture)
        #expect(PostgresDate.parse("garbage") == nil)
        let d = Date(timeIntervalSince1970: 1_790_000_000.25)
        #expect(PostgresDate.parse(PostgresDate.format(d).replacingOccurrences(of: "T", with: " ")) == d)
    }

    @Test("a refused statement names SQLSTATE and the server's reason")
    func statementError() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let c = try PostgresConnection(url: db.url)
        do {
            try c.query("SELECT * FROM no_such_table")
            Issue.record("expected an error")
        } catch let e as DubfarmError {
            #expect(e.code == .database)
            #expect(e.message.contains("no_such_table") && e.message.contains("42P01"))
            #expect(c.lastSQLState == "42P01")
        }
        // The connection stays usable, and a failed transaction rolls back.
        try c.query("CREATE TABLE t (x int)")
        #expect(throws: DubfarmError.self) {
            try c.transaction {
                try c.query("INSERT INTO t VALUES (1)")
                try c.query("INSERT INTO t VALUES ('not a number')")
            }
        }
        #expect(try c.query("SELECT count(*) AS n FROM t")[0]["n"].decode(Int.self) == 0)
        try c.execute(script: "INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);")
        #expect(try c.query("SELECT count(*) AS n FROM t")[0]["n"].decode(Int.self) == 2)
    }

    @Test("an unreachable server is .unreachable, names the host, never the password")
    func unreachableHidesPassword() throws {
        let secret = "s3cr3t-Pa55"
        for url in ["postgresql://farm:\(secret)@127.0.0.1:1/farm?connect_timeout=2",
                    "postgresql://farm@127.0.0.1:1/farm?password=\(secret)",
                    "host=127.0.0.1 port=1 user=farm password=\(secret) dbname=farm"] {
            do {
                _ = try PostgresConnection(url: url, connectTimeoutSeconds: 2)
                Issue.record("expected an error")
            } catch let e as DubfarmError {
                #expect(e.code == .unreachable)
                #expect(e.message.contains("127.0.0.1"))
                #expect(!e.message.contains(secret), "password leaked: \(e.message)")
            }
        }
        // A malformed URL is a configuration error, still without the password.
        do {
            _ = try PostgresConnection(url: "postgresql://farm:\(secret)@host:notaport/db?bogus=1")
            Issue.record("expected an error")
        } catch let e as DubfarmError {
            #expect(!e.message.contains(secret), "password leaked: \(e.message)")
        }
        #expect(!PostgresTarget.redacted("postgresql://u:\(secret)@h/db").contains(secret))
        #expect(PostgresTarget(parsing: "postgresql://u:\(secret)@h:5/db")?.description == "u@h:5/db")
    }

    @Test("LISTEN/NOTIFY delivers, waits with a timeout, and survives reconnect")
    func notifications() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let listener = try PostgresConnection(url: db.url)
        let sender = try PostgresConnection(url: db.url)
        try listener.listen("chan")
        #expect(try listener.drainNotifications().isEmpty)
        let start = Date()
        #expect(try listener.waitForNotifications(timeout: 0.2).isEmpty)
        #expect(Date().timeIntervalSince(start) >= 0.15)
        try sender.notify("chan", payload: "hello")
        let got = try listener.waitForNotifications(timeout: 5)
        #expect(got.map(\.payload) == ["hello"] && got.first?.channel == "chan")
        try listener.reconnect()
        #expect(listener.isConnected)
        try sender.notify("chan", payload: "again")
        #expect(try listener.waitForNotifications(timeout: 5).map(\.payload) == ["again"])
    }

    @Test("a killed backend is reported as unreachable and reconnect() recovers")
    func lostConnection() async throws {
        let db = try await TestDatabase.create(migrated: false)
        defer { db.drop() }
        let c = try PostgresConnection(url: db.url)
        let admin = try PostgresConnection(url: db.url)
        try admin.query("SELECT pg_terminate_backend($1)", [.int(Int(c.backendPID))])
        do {
            try c.query("SELECT 1")
            Issue.record("expected an error")
        } catch let e as DubfarmError {
            #expect(e.code == .unreachable || e.code == .database)
        }
        try c.reconnect()
        #expect(try c.query("SELECT 1 AS one", prepare: true)[0]["one"].decode(Int.self) == 1)
    }
}
