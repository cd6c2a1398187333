import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    /// The result token and worker statistics of every segment of `job` (nil where none recorded).
    public func results(job: JobID) throws -> [Int: (token: LeaseToken?, stats: SegmentStats?)] {
        let rows = try db().query("SELECT idx, result_token, stats::text AS stats FROM segments WHERE job_id = $1",
                                  [.int(Int(job.rawValue))], prepare: true)
        var out: [Int: (LeaseToken?, SegmentStats?)] = [:]
        for r in rows {
            let token = try r["result_token"].decode(String?.self).flatMap { LeaseToken(hex: $0) }
            let stats = try r["stats"].decode(String?.self).flatMap { try? JSONDecoder().decode(SegmentStats.self, from: Data($0.utf8)) }
            out[try r["idx"].decode(Int.self)] = (token, stats)
        }
        return out
    }
}

extension FarmStore {
    /// Frames finished per job (done segments in full, leased ones as far as reported).
    public func framesDone(jobs: [JobID]) throws -> [JobID: Int] {
        guard !jobs.isEmpty else { return [:] }
        let rows = try db().query("""
            SELECT job_id, sum(frames_done)::bigint AS frames FROM segments WHERE job_id = ANY($1) GROUP BY job_id
            """, [.array(jobs.map { .int(Int($0.rawValue)) })], prepare: true)
        var out: [JobID: Int] = [:]
        for r in rows { out[JobID(try r["job_id"].decode(Int64.self))] = try r["frames"].decode(Int.self) }
        return out
    }
}
