import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    /// One worker's state as the coordinator last saw it.
    package struct WorkerStateUpdate: Sendable, Hashable {
        package var name: String
        package var state: WorkerStatus
        package var segment: SegmentRef?
        package init(name: String, state: WorkerStatus, segment: SegmentRef?) {
            self.name = name
            self.state = state
            self.segment = segment
        }
    }

    /// Records the state and current segment of many workers in one statement (one round trip,
    /// committed like segment claims: without waiting for the WAL flush when
    /// `asyncSegmentCommits`), with an event for each worker whose state changed. Unknown names
    /// are skipped. The coordinator calls this on its liveness tick, so that with many workers the
    /// worker table costs one statement per tick instead of a transaction per worker and segment.
    package func setWorkerStates(_ updates: [WorkerStateUpdate], actor: String? = nil) throws {
        guard !updates.isEmpty else { return }
        try db().query("""
            WITH u AS (
                SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[]) AS u(name, state, job, seg)
            ), old AS (
                SELECT w.name, w.state AS before FROM workers w JOIN u USING (name) FOR UPDATE OF w
            ), upd AS (
                UPDATE workers w SET state = u.state, current_job = u.job, current_segment = u.seg, last_seen = now()
                FROM u WHERE w.name = u.name
            )
            INSERT INTO events (kind, job_id, segment_idx, worker, from_state, to_state, reason, actor)
            SELECT 'worker', u.job, u.seg, u.name, old.before, u.state, NULL, $5
            FROM u JOIN old USING (name) WHERE old.before <> u.state
            """, [.array(updates.map { .text($0.name) }), .array(updates.map { .text($0.state.rawValue) }),
                  .array(updates.map { u in u.segment.map { .int(Int($0.job.rawValue)) } }),
                  .array(updates.map { u in u.segment.map { .int($0.index) } }),
                  .text(actor ?? defaultActor)], prepare: true)
    }
}
