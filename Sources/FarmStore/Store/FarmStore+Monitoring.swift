import DubfarmCore
import Foundation
import Postgres

/// Counts by state, for the coordinator's Prometheus gauges (read at scrape time, so they match
/// the database exactly).
package struct StateCounts: Sendable, Hashable {
    package var jobs: [String: Int] = [:]
    package var segments: [String: Int] = [:]
    package var workers: [String: Int] = [:]
    package init() {}
}

extension FarmStore {
    /// Jobs, segments and workers counted by state, in one consistent query.
    package func stateCounts() throws -> StateCounts {
        let rows = try db().query("""
            SELECT 'job' AS kind, state, count(*)::bigint AS n FROM jobs GROUP BY state
            UNION ALL SELECT 'segment', state, count(*)::bigint FROM segments GROUP BY state
            UNION ALL SELECT 'worker', state, count(*)::bigint FROM workers GROUP BY state
            """, [], prepare: true)
        var out = StateCounts()
        for r in rows {
            let state = try r["state"].decode(String.self), n = try r["n"].decode(Int.self)
            switch try r["kind"].decode(String.self) {
            case "job": out.jobs[state] = n
            case "segment": out.segments[state] = n
            default: out.workers[state] = n
            }
        }
        return out
    }

    /// The most recent `limit` events of all jobs, newest first (for the dashboard).
    package func recentEvents(limit: Int) throws -> [EventRecord] {
        try db().query("SELECT \(Columns.event) FROM events ORDER BY id DESC LIMIT $1", [.int(limit)], prepare: true)
            .map(EventRecord.init(row:))
    }
}
