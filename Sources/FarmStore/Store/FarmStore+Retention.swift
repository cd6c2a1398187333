import DubfarmCore
import Foundation
import Postgres

/// What `dubfarm gc` may remove: finished jobs' files, and uploads no live job refers to.
extension FarmStore {
    /// Finished jobs (`done`, `failed`, `cancelled`) that ended before `cutoff` and still have
    /// their files, oldest first.
    package func finishedJobsWithMedia(endedBefore cutoff: Date, limit: Int = 10_000) throws -> [JobRecord] {
        let rows = try db().query("""
            SELECT \(Columns.job) FROM jobs j
            WHERE j.state IN ('done', 'failed', 'cancelled') AND j.media_removed_at IS NULL
              AND coalesce(j.finished_at, j.updated_at) < $1
            ORDER BY j.id LIMIT $2
            """, [.timestamp(cutoff), .int(limit)], prepare: true)
        return try rows.map(JobRecord.init(row:))
    }

    /// Records that gc removed job `id`'s files: only while the job is still finished (a job
    /// retried meanwhile keeps them). Returns whether it was recorded.
    @discardableResult
    package func markMediaRemoved(_ id: JobID, actor: String? = nil) throws -> Bool {
        try transaction { c in
            let state = try lockJob(c, id)
            guard state.isTerminal else { return false }
            try c.query("UPDATE jobs SET media_removed_at = now() WHERE id = $1 AND media_removed_at IS NULL", [.int(Int(id.rawValue))])
            try recordEvent(c, kind: .job, job: id, from: state.rawValue, to: state.rawValue,
                            reason: "media removed by gc (inputs and output)", actor: actor ?? defaultActor)
            return true
        }
    }

    /// The uploads (content ids) every job that is not finished still needs: gc keeps these.
    package func uploadsOfLiveJobs() throws -> Set<String> {
        let rows = try db().query("""
            SELECT v.value AS upload FROM jobs j, jsonb_each_text(j.params->'options') v
            WHERE j.state NOT IN ('done', 'failed', 'cancelled') AND v.key LIKE 'upload.%'
            """, [], prepare: true)
        return Set(try rows.map { try $0["upload"].decode(String.self) })
    }
}
