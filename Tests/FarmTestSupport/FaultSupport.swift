import DubfarmCore
import Foundation
import LocalFarm
import Postgres

/// One row of the `events` table, as fault tests read it.
package struct EventRow: Sendable, Hashable {
    package var segment: Int?
    package var worker: String?
    package var from: String?
    package var to: String?
    package var reason: String?
    package var actor: String?
}

extension TestDatabase {
    /// A database in a PostgreSQL cluster of its own, for tests that stop and restart the server
    /// (the shared cluster serves every other test). Remove it with ``destroyPrivateCluster()``.
    package static func createPrivate() async throws -> TestDatabase {
        let dir = URL(fileURLWithPath: "/tmp/dubfarm-pgpriv-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let cluster = try PostgresCluster(directory: dir, port: 5432, ephemeral: true)
        try cluster.start()
        let name = "t_private"
        try cluster.createDatabase(name)
        let db = TestDatabase(name: name, url: cluster.url(database: name), cluster: cluster)
        let store = db.store()
        try await store.migrate()
        await store.close()
        return db
    }

    /// Stops this database's private cluster and deletes it (for ``createPrivate()`` only).
    package func destroyPrivateCluster() {
        try? cluster.stop()
        try? FileManager.default.removeItem(at: cluster.root)
        if cluster.root != cluster.directory { try? FileManager.default.removeItem(at: cluster.directory) }
    }

    /// Every `events` row of `job`, oldest first.
    package func events(job: Int64) throws -> [EventRow] {
        let c = try PostgresConnection(url: url)
        let rows = try c.query("""
            SELECT segment_idx, worker, from_state, to_state, reason, actor FROM events WHERE job_id = $1 ORDER BY id
            """, [.int(Int(job))])
        return rows.map { r in
            EventRow(segment: r["segment_idx"].string.flatMap { Int($0) }, worker: r["worker"].string, from: r["from_state"].string,
                     to: r["to_state"].string, reason: r["reason"].string, actor: r["actor"].string)
        }
    }

    /// The `job_worker_failures` counts of `job`, by worker.
    package func workerFailures(job: Int64) throws -> [String: Int] {
        let c = try PostgresConnection(url: url)
        var out: [String: Int] = [:]
        for r in try c.query("SELECT worker, failures FROM job_worker_failures WHERE job_id = $1", [.int(Int(job))]) {
            if let w = r["worker"].string, let n = r["failures"].string.flatMap({ Int($0) }) { out[w] = n }
        }
        return out
    }
}
