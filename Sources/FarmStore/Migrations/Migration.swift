import DubfarmCore
import Postgres

/// One numbered schema change (`Migrations/NNNN_name.sql`), embedded in the binary by
/// `tools/gen-migrations.sh`.
package struct Migration: Sendable, Hashable, CustomStringConvertible {
    package var version: Int
    package var name: String
    /// The SQL script (no `BEGIN`/`COMMIT`: the migrator wraps it in a transaction).
    package var sql: String

    package init(version: Int, name: String, sql: String) {
        self.version = version
        self.name = name
        self.sql = sql
    }

    package var description: String { String(format4(version)) + "_" + name }

    /// The newest schema version this build knows.
    package static var latestVersion: Int { embedded.map(\.version).max() ?? 0 }
}

private func format4(_ v: Int) -> String {
    let s = String(v)
    return s.count >= 4 ? s : String(repeating: "0", count: 4 - s.count) + s
}

/// Applies migrations in order, each in its own transaction, each exactly once.
///
/// Every transaction first takes a transaction-scoped advisory lock, so two migrators (two
/// coordinators starting at once) never race: the second waits, then finds the work done.
/// Applied versions are recorded in `schema_migrations` with an MD5 checksum of their SQL; a
/// migration whose file changed after it was applied is an error, not silently skipped.
enum Migrator {
    /// `pg_advisory_xact_lock` key: "dubfarm" in ASCII.
    static let lockKey = 0x64_7562_6661_726d

    static let createTable = """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """

    static func migrate(_ c: PostgresConnection, migrations: [Migration]) throws -> [Migration] {
        let sorted = migrations.sorted { $0.version < $1.version }
        let known = sorted.last?.version ?? 0
        var applied: [Migration] = []
        // The bookkeeping table, under the lock.
        try c.transaction {
            try c.query("SELECT pg_advisory_xact_lock($1)", [.int(lockKey)])
            try c.query(createTable)
        }
        for m in sorted {
            let didApply = try c.transaction { () -> Bool in
                try c.query("SELECT pg_advisory_xact_lock($1)", [.int(lockKey)])
                let newest = try c.query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[0]["v"].decode(Int.self)
                if newest > known { throw tooNew(database: newest, known: known) }
                let rows = try c.query("SELECT checksum, checksum = md5($2) AS same FROM schema_migrations WHERE version = $1",
                                       [.int(m.version), .text(m.sql)])
                if let row = rows.first {
                    guard try row["same"].decode(Bool.self) else {
                        throw DubfarmError(.database,
                                           "migration \(m) was changed after it was applied to this database (checksums differ); restore the original file and add a new numbered migration instead")
                    }
                    return false
                }
                do {
                    try c.execute(script: m.sql)
                } catch let e as DubfarmError {
                    throw DubfarmError(.database, "migration \(m) failed and was rolled back: \(e.message)")
                }
                try c.query("INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, md5($3))",
                            [.int(m.version), .text(m.name), .text(m.sql)])
                return true
            }
            if didApply { applied.append(m) }
        }
        return applied
    }

    /// The highest applied version; 0 when the database has no dubfarm schema.
    static func version(_ c: PostgresConnection) throws -> Int {
        let exists = try c.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS e")[0]["e"].decode(Bool.self)
        guard exists else { return 0 }
        return try c.query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[0]["v"].decode(Int.self)
    }

    static func check(_ c: PostgresConnection, known: Int) throws {
        let v = try version(c)
        if v > known { throw tooNew(database: v, known: known) }
        if v == 0 {
            throw DubfarmError(.configuration,
                               "database \(c.target.database ?? "") has no dubfarm schema; run `dubfarm migrate` first")
        }
        if v < known {
            throw DubfarmError(.configuration,
                               "database schema is version \(v) but this dubfarm needs version \(known); run `dubfarm migrate`")
        }
    }

    static func tooNew(database: Int, known: Int) -> DubfarmError {
        DubfarmError(.schemaTooNew,
                     "database schema is version \(database) but this dubfarm knows up to \(known); upgrade dubfarm")
    }
}
