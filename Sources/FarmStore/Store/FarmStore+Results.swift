import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    /// The kept result of every segment of `job`: the lease token it came from, where it lies
    /// in the job's result log (`offset`, and `bytes`, the record's length; nil offset: a file of
    /// its own) and the worker's statistics (nil where none recorded).
    package func results(job: JobID) throws -> [Int: (token: LeaseToken?, offset: Int64?, bytes: Int64?, stats: SegmentStats?)] {
        let rows = try db().query("""
            SELECT idx, result_token, result_offset, result_bytes, stats::text AS stats FROM segments WHERE job_id = $1
            """, [.int(Int(job.rawValue))], prepare: true)
        var out: [Int: (LeaseToken?, Int64?, Int64?, SegmentStats?)] = [:]
        for r in rows {
            let token = try r["result_token"].decode(String?.self).flatMap { LeaseToken(hex: $0) }
            let stats = try r["stats"].decode(String?.self).flatMap { try? JSONDecoder().decode(SegmentStats.self, from: Data($0.utf8)) }
            out[try r["idx"].decode(Int.self)] = (token, try r["result_offset"].decode(Int64?.self),
                                                  try r["result_bytes"].decode(Int64?.self), stats)
        }
        return out
    }
}

extension FarmStore {
    /// Frames finished per job (done segments in full, leased ones as far as reported).
    package func framesDone(jobs: [JobID]) throws -> [JobID: Int] {
        guard !jobs.isEmpty else { return [:] }
        let rows = try db().query("""
            SELECT job_id, sum(frames_done)::bigint AS frames FROM segments WHERE job_id = ANY($1) GROUP BY job_id
            """, [.array(jobs.map { .int(Int($0.rawValue)) })], prepare: true)
        var out: [JobID: Int] = [:]
        for r in rows { out[JobID(try r["job_id"].decode(Int64.self))] = try r["frames"].decode(Int.self) }
        return out
    }
}
