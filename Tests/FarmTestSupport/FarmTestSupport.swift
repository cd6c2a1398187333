import DubfarmCore
import FarmStore
import Foundation
import LocalFarm
import Logging
import Postgres

#if canImport(Glibc)
import Glibc
#endif

/// A fresh PostgreSQL database for one test, in a cluster shared by every test process of this
/// user on this machine.
///
/// The cluster lives in `/tmp/dubfarm-test-pg-<uid>` (override with `DUBFARM_TEST_PG_DIR`),
/// listens on its own unix socket only, runs without fsync (test data is disposable; set
/// `DUBFARM_TEST_PG_DURABLE=1` with another directory for a durable one) and is left
/// running between runs, so only the first run pays for `initdb`. A cluster left broken by a
/// crashed run is wiped and created again. Each ``create(migrated:)`` makes a new database
/// `t_<unix time>_<random>`; ``drop()`` removes it, and databases older than an hour (from
/// runs that died before dropping theirs) are removed on first use.
package struct TestDatabase: Sendable {
    /// The database's name.
    package let name: String
    /// Its URL (superuser over the socket: no password).
    package let url: String
    /// The shared cluster.
    package let cluster: PostgresCluster

    /// A new database, migrated to this build's schema unless `migrated` is false.
    package static func create(migrated: Bool = true) async throws -> TestDatabase {
        let cluster = try Shared.cluster.get()
        let name = "t_\(Int(Date().timeIntervalSince1970))_\(UInt32.random(in: 0...UInt32.max))"
        try cluster.createDatabase(name)
        let db = TestDatabase(name: name, url: cluster.url(database: name), cluster: cluster)
        if migrated {
            let store = db.store()
            try await store.migrate()
            await store.close()
        }
        return db
    }

    /// A store on this database.
    package func store(actor: String = "test", asyncSegmentCommits: Bool = false) -> FarmStore {
        var logger = Logger(label: "dubfarm.store.test")
        logger.logLevel = .warning
        return FarmStore(url: url, actor: actor, asyncSegmentCommits: asyncSegmentCommits, logger: logger)
    }

    /// Drops the database, ending its sessions (best effort).
    package func drop() {
        try? cluster.dropDatabase(name)
    }

    /// The shared cluster, started (for tests that need more than one database).
    package static func sharedCluster() throws -> PostgresCluster {
        try Shared.cluster.get()
    }
}

private enum Shared {
    /// Started once per process (Swift initialises globals lazily and exactly once).
    static let cluster: Result<PostgresCluster, Error> = Result {
        let dir = ProcessInfo.processInfo.environment["DUBFARM_TEST_PG_DIR"] ?? "/tmp/dubfarm-test-pg-\(getuid())"
        let durable = ProcessInfo.processInfo.environment["DUBFARM_TEST_PG_DURABLE"] == "1"
        let c = try PostgresCluster(directory: URL(fileURLWithPath: dir), port: 5432, ephemeral: !durable)
        do {
            try c.start()
        } catch {
            // A cluster broken by a crashed run: it only ever holds test data, so start over.
            try? c.stop()
            try? FileManager.default.removeItem(at: c.root)
            try c.start()
        }
        removeStaleDatabases(c)
        return c
    }

    static func removeStaleDatabases(_ c: PostgresCluster) {
        guard let conn = try? PostgresConnection(url: c.url(database: "postgres")),
              let rows = try? conn.query("SELECT datname FROM pg_database WHERE datname LIKE 't\\_%'") else { return }
        let cutoff = Int(Date().timeIntervalSince1970) - 3600
        for row in rows {
            guard let name = row["datname"].string else { continue }
            let parts = name.split(separator: "_")
            if parts.count == 3, let t = Int(parts[1]), t < cutoff { try? c.dropDatabase(name) }
        }
    }
}
