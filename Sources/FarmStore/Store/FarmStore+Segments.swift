import DubfarmCore
import Foundation
import Postgres

/// A segment's machine before and after a rule of ``SegmentStateMachine`` was applied.
struct SegmentChange {
    var ref: SegmentRef
    var old: SegmentStateMachine
    var new: SegmentStateMachine
}

extension FarmStore {
    // MARK: Reading

    /// The segments of `job`, in the video's order (by first frame: a segment split by a partial
    /// result has its remainder numbered after the job's last segment).
    package func segments(job: JobID) throws -> [SegmentRecord] {
        try db().query("SELECT \(Columns.segment) FROM segments WHERE job_id = $1 ORDER BY start_frame",
                       [.int(Int(job.rawValue))], prepare: true).map(SegmentRecord.init(row:))
    }

    /// One segment; `nil` if there is none.
    package func segment(_ ref: SegmentRef) throws -> SegmentRecord? {
        try db().query("SELECT \(Columns.segment) FROM segments WHERE job_id = $1 AND idx = $2",
                       [.int(Int(ref.job.rawValue)), .int(ref.index)], prepare: true).first.map(SegmentRecord.init(row:))
    }

    // MARK: Claiming

    /// Leases the most urgent claimable segment to `worker` under `token`, in one statement:
    /// `pending` segments past their backoff, of `running` jobs, by job priority (highest first),
    /// job age, then index; jobs where `worker` is blocklisted are skipped. Concurrent claimers
    /// never get the same segment (`FOR UPDATE SKIP LOCKED`). `nil` when nothing is claimable.
    ///
    /// Only jobs the worker can run: when `stage` is given, jobs whose stage (the `stage` option
    /// of their params) is that one, and of those that require a model (the `model` option) only
    /// the ones `model` satisfies (equal, or the job names the model without a version:
    /// ``WorkerCapabilities/model(_:satisfies:)``). Without `stage`, no capability check is made.
    package func claimSegment(worker: String, token: LeaseToken = .random(), leaseSeconds: Double,
                             stage: String? = nil, model: String? = nil) throws -> ClaimedSegment? {
        let rows = try db().query(Self.claimSQL, claimParams(worker: worker, token: token, leaseSeconds: leaseSeconds,
                                                             stage: stage, model: model),
                                  prepare: true)
        return try rows.first.map { try decodeClaim($0, worker: worker, token: token) }
    }

    static let claimSQL = """
            WITH c AS (
                -- Planned as an ordered walk of segments_claim that stops at the first free row,
                -- given statistics (savePlan runs ANALYZE; without them the planner may sort
                -- every pending segment on each claim). Pending segments exist only in running
                -- jobs (savePlan, retryJob and the cancelling paths keep it so); the job check is
                -- a safety net.
                SELECT s.job_id, s.idx FROM segments s
                WHERE s.state = 'pending' AND s.not_before <= now()
                  AND s.job_id IN (SELECT id FROM jobs WHERE state = 'running'
                                   AND ($5::text IS NULL OR (params->'options'->>'stage' = $5
                                        AND (params->'options'->>'model' IS NULL OR params->'options'->>'model' = $6
                                             -- a model named without a version: any version of it
                                             -- (WorkerCapabilities.model(_:satisfies:))
                                             OR (strpos(params->'options'->>'model', '@') = 0
                                                 AND params->'options'->>'model' = split_part($6, '@', 1))))))
                  AND NOT EXISTS (SELECT 1 FROM job_worker_failures f
                                  WHERE f.job_id = s.job_id AND f.worker = $1 AND f.failures >= $4)
                ORDER BY s.job_priority DESC, s.job_created_at, s.job_id, s.idx
                LIMIT 1
                FOR UPDATE OF s SKIP LOCKED
            ), u AS (
                UPDATE segments s SET state = 'leased', lease_token = $2, leased_by = $1,
                    lease_expires_at = now() + make_interval(secs => $3), leases = s.leases + 1,
                    frames_done = 0, started_at = now(), updated_at = now()
                FROM c WHERE s.job_id = c.job_id AND s.idx = c.idx
                RETURNING s.job_id, s.idx, s.start_frame, s.end_frame, s.lease_expires_at, s.leases, s.failures
            ), e AS (
                INSERT INTO events (kind, job_id, segment_idx, worker, from_state, to_state, reason, actor)
                SELECT 'segment', job_id, idx, $1, 'pending', 'leased', 'claimed', $1 FROM u
            )
            SELECT * FROM u
        """

    func claimParams(worker: String, token: LeaseToken, leaseSeconds: Double, stage: String? = nil,
                     model: String? = nil) -> [PostgresValue?] {
        [.text(worker), .text(token.description), .double(leaseSeconds), .int(Self.blocklistFailures),
         stage.map { .text($0) }, model.map { .text($0) }]
    }

    func decodeClaim(_ row: PostgresRow, worker: String, token: LeaseToken) throws -> ClaimedSegment {
        ClaimedSegment(
            ref: SegmentRef(job: JobID(try row["job_id"].decode(Int64.self)), index: try row["idx"].decode(Int.self)),
            frames: try row["start_frame"].decode(Int.self)..<row["end_frame"].decode(Int.self),
            token: token, worker: worker, leaseExpiresAt: try row["lease_expires_at"].decode(Date.self),
            attempt: try row["leases"].decode(Int.self), failures: try row["failures"].decode(Int.self))
    }

    // MARK: Replies from workers (fenced)

    /// Accepts the result of lease `token`: the segment becomes `done`. A stale token (the lease
    /// was released, expired or re-leased) is rejected and changes nothing; log it.
    ///
    /// Completions of one job are serialised on the job's row, so exactly one of them sees
    /// `allDone`. One round trip (`BEGIN`, job lock, fenced write, `COMMIT`, pipelined); a
    /// rejected result takes a second one, to read why.
    /// `stats`, when given, is recorded with the result, and the completing `token` is kept as
    /// the segment's result token (the stitch checks the result's record against it).
    package func completeSegment(_ ref: SegmentRef, token: LeaseToken, resultBytes: Int64, processSeconds: Double,
                                stats: SegmentStats? = nil)
        throws -> Result<CompletionOutcome, SegmentStateMachine.Rejection> {
        try completeSegments([CompletionRequest(ref: ref, token: token, resultBytes: resultBytes, processSeconds: processSeconds,
                                                stats: stats)], leaseSeconds: 0)[0].completion
    }

    /// Accepts the result of lease `token` (as ``completeSegment(_:token:resultBytes:processSeconds:)``)
    /// and leases the next claimable segment to `worker` (as ``claimSegment(worker:token:leaseSeconds:)``)
    /// in the same round trip as the completion's commit: what a coordinator does when a worker
    /// returns a result. The claim happens even when the result is rejected.
    package func completeSegment(_ ref: SegmentRef, token: LeaseToken, resultBytes: Int64, processSeconds: Double,
                                stats: SegmentStats? = nil, thenClaimFor worker: String, nextToken: LeaseToken = .random(),
                                leaseSeconds: Double, stage: String? = nil, model: String? = nil)
        throws -> (completion: Result<CompletionOutcome, SegmentStateMachine.Rejection>, next: ClaimedSegment?) {
        // A batch of one (FarmStore+CompleteBatch.swift): the same statements in the same order.
        let claim = ClaimRequest(worker: worker, token: nextToken, stage: stage, model: model)
        return try completeSegments([CompletionRequest(ref: ref, token: token, resultBytes: resultBytes, processSeconds: processSeconds,
                                                       stats: stats, thenClaim: claim)], leaseSeconds: leaseSeconds)[0]
    }

    /// The completion, in one pipelined round trip: `BEGIN`, lock the job's row (completions
    /// of a job are serialised on it, so exactly one sees `allDone`), the fenced write, `COMMIT`,
    /// and the chained claim when there is one.
    ///
    /// The fencing rule of ``SegmentStateMachine/complete(token:)`` (the segment is `leased`
    /// under `token`) is the write's `WHERE` clause, evaluated under the segment's row lock: a
    /// stale token updates no row, and then the worker's counters and the event are not written
    /// either (they hang off the updated row). Only then is the segment read once more, to say
    /// why it was rejected, through the state machine (the rare path).
    static let completeSQL = """
        WITH u AS (
            UPDATE segments SET state = 'done', lease_token = NULL, lease_expires_at = NULL, result_bytes = $3,
                process_seconds = $4, frames_done = frames_total, finished_at = now(), updated_at = now(),
                result_token = $5, stats = coalesce($6, stats), result_offset = $7
            WHERE job_id = $1 AND idx = $2 AND state = 'leased' AND lease_token = $5
            RETURNING frames_total, leased_by
        ), w AS (
            UPDATE workers SET segments_done = segments_done + 1,
                frames_done = workers.frames_done + u.frames_total, last_seen = now()
            FROM u WHERE workers.name = u.leased_by
        ), e AS (
            INSERT INTO events (kind, job_id, segment_idx, worker, from_state, to_state, reason, actor)
            SELECT 'segment', $1, $2, u.leased_by, 'leased', 'done', 'completed', u.leased_by FROM u
        )
        SELECT (SELECT count(*) FROM u) AS accepted,
               NOT EXISTS (SELECT 1 FROM segments WHERE job_id = $1 AND state <> 'done' AND idx <> $2) AS all_done
        """

    /// Accepts a partial result of lease `token`: a stopping worker returned the first `frames`
    /// frames of the segment and no more. In one transaction the segment shrinks to those frames
    /// and is `done` (its result stored as a whole result's is), and its other frames become a
    /// new `pending` segment, numbered after the job's last (the stitch orders segments by their
    /// first frame). The job gains a segment; nothing the worker finished is redone.
    ///
    /// A stale token is rejected and changes nothing. `frames` must be more than none and fewer
    /// than the segment's (a `protocolViolation` otherwise: none is a hand-back, all a RESULT).
    package func completePartially(_ ref: SegmentRef, token: LeaseToken, frames: Int, resultBytes: Int64, resultOffset: Int64?,
                                   processSeconds: Double, stats: SegmentStats?)
        throws -> Result<PartialOutcome, SegmentStateMachine.Rejection> {
        let statsJSON = try Self.statsParameter(stats)
        return try transaction { c in
            _ = try lockJob(c, ref.job)
            let rec = try lockSegment(c, ref)
            var m = rec.machine
            do throws(SegmentStateMachine.Rejection) {
                try m.complete(token: token)
            } catch {
                return .failure(error)
            }
            guard let (finished, rest) = SegmentPlanner.split(rec.frames, afterFrames: frames) else {
                throw DubfarmError(.protocolViolation, "a partial result of segment \(ref) must hold more than none and fewer than its \(rec.frames.count) frames, not \(frames)")
            }
            let worker = rec.leasedBy
            try c.query("""
                UPDATE segments SET state = 'done', lease_token = NULL, lease_expires_at = NULL, end_frame = $3,
                    frames_total = $4, frames_done = $4, result_bytes = $5, process_seconds = $6, result_token = $7,
                    stats = coalesce($8, stats), result_offset = $9, finished_at = now(), updated_at = now()
                WHERE job_id = $1 AND idx = $2
                """, [.int(Int(ref.job.rawValue)), .int(ref.index), .int(finished.upperBound), .int(finished.count),
                      .int(Int(resultBytes)), .double(processSeconds), .text(token.description), statsJSON,
                      resultOffset.map { .int(Int($0)) }])
            let index = try c.query("""
                INSERT INTO segments (job_id, idx, start_frame, end_frame, frames_total, job_priority, job_created_at)
                SELECT $1, (SELECT max(idx) + 1 FROM segments WHERE job_id = $1), $2::int, $3::int, $3::int - $2::int, job_priority, job_created_at
                FROM segments WHERE job_id = $1 AND idx = $4
                RETURNING idx
                """, [.int(Int(ref.job.rawValue)), .int(rest.lowerBound), .int(rest.upperBound), .int(ref.index)])[0]["idx"].decode(Int.self)
            try c.query("UPDATE jobs SET segment_count = segment_count + 1, updated_at = now() WHERE id = $1", [.int(Int(ref.job.rawValue))])
            if let worker {
                try c.query("UPDATE workers SET frames_done = frames_done + $2, last_seen = now() WHERE name = $1",
                            [.text(worker), .int(finished.count)])
            }
            try recordEvent(c, kind: .segment, job: ref.job, segment: ref.index, worker: worker,
                            from: SegmentState.leased.rawValue, to: SegmentState.done.rawValue,
                            reason: "partial: \(worker ?? "the worker") stopped after frames \(finished.lowerBound)..<\(finished.upperBound) of \(rec.frames.lowerBound)..<\(rec.frames.upperBound); frames \(rest.lowerBound)..<\(rest.upperBound) are segment \(index)",
                            actor: worker)
            try recordEvent(c, kind: .segment, job: ref.job, segment: index, worker: nil, from: nil, to: SegmentState.pending.rawValue,
                            reason: "planned: frames \(rest.lowerBound)..<\(rest.upperBound), the rest of segment \(ref.index)", actor: worker)
            try notifyWork(c)
            return .success(PartialOutcome(finished: finished, remainder: SegmentRef(job: ref.job, index: index), remainderFrames: rest))
        }
    }

    /// Records a failed attempt of lease `token`. The segment goes back to `pending` after a
    /// backoff (``DubfarmCore/RetryPolicy``), or, its attempts spent, becomes `dead` and its job
    /// fails with "segment N: <error>" (the job's other leases are cancelled and returned). The
    /// worker's failures in this job are counted; at ``blocklistFailures`` it gets no more of
    /// the job's segments. A stale token is rejected and changes nothing.
    ///
    /// - Parameter code: the job's error code if this failure kills the job.
    package func failSegment(_ ref: SegmentRef, token: LeaseToken, error: String, code: DubfarmError.Code = .internalError,
                            policy: RetryPolicy = RetryPolicy())
        throws -> Result<FailureOutcome, SegmentStateMachine.Rejection> {
        try transaction { c in
            // Lock order everywhere: job row, then segment rows.
            let jobState = try lockJob(c, ref.job)
            let rec = try lockSegment(c, ref)
            var m = rec.machine
            let outcome: SegmentStateMachine.FailureOutcome
            do throws(SegmentStateMachine.Rejection) {
                outcome = try m.fail(token: token, policy: policy, permanent: code.isPermanent)
            } catch {
                return .failure(error)
            }
            let worker = rec.leasedBy
            let backoff: Double
            if case .retry(let s) = outcome { backoff = s } else { backoff = 0 }
            try c.query("""
                UPDATE segments SET state = $3, lease_token = NULL, leased_by = NULL, lease_expires_at = NULL,
                    failures = $4, error = $5, frames_done = 0, updated_at = now(),
                    not_before = CASE WHEN $3 = 'pending' THEN now() + make_interval(secs => $6) ELSE not_before END,
                    finished_at = CASE WHEN $3 = 'dead' THEN now() ELSE NULL END
                WHERE job_id = $1 AND idx = $2
                """, [.int(Int(ref.job.rawValue)), .int(ref.index), .text(m.state.rawValue), .int(m.failures),
                      .text(error), .double(backoff)], prepare: true)
            let why: String
            switch outcome {
            case .retry(let s): why = "failed (attempt \(m.failures) of \(policy.maxAttempts), retry in \(s) s): \(error)"
            case .dead where code.isPermanent && m.failures < policy.maxAttempts:
                why = "failed (unusable input, not retried): \(error)"
            case .dead: why = "failed (attempt \(m.failures) of \(policy.maxAttempts), giving up): \(error)"
            }
            try recordEvent(c, kind: .segment, job: ref.job, segment: ref.index, worker: worker,
                            from: SegmentState.leased.rawValue, to: m.state.rawValue, reason: why, actor: worker)
            var workerFailures = 0
            // Unusable input is not the worker's fault: it does not count towards its blocklisting.
            if let worker, !code.isPermanent {
                workerFailures = try c.query("""
                    INSERT INTO job_worker_failures (job_id, worker, failures) VALUES ($1, $2, 1)
                    ON CONFLICT (job_id, worker) DO UPDATE SET failures = job_worker_failures.failures + 1
                    RETURNING failures
                    """, [.int(Int(ref.job.rawValue)), .text(worker)], prepare: true)[0]["failures"].decode(Int.self)
            }
            var jobFailed = false
            var cancelled: [LeasedSegment] = []
            if outcome == .dead {
                if jobState.canTransition(to: .failed) {
                    let e = DubfarmError(code, "segment \(ref.index): \(error)")
                    try applyJobTransition(c, ref.job, from: jobState, to: .failed, reason: e.message, actor: worker, error: e)
                    cancelled = try cancelSegments(c, ref.job, reason: "job failed: segment \(ref.index) is dead", actor: worker)
                    jobFailed = true
                }
            }
            return .success(FailureOutcome(segment: outcome, failures: m.failures, worker: worker,
                                           workerFailuresInJob: workerFailures,
                                           workerBlocklisted: workerFailures >= Self.blocklistFailures,
                                           jobFailed: jobFailed, cancelledLeases: cancelled))
        }
    }

    /// Records progress of lease `token`; `false` (and nothing written) when the token is stale.
    /// Not a state change: no event.
    @discardableResult
    package func reportProgress(_ ref: SegmentRef, token: LeaseToken, framesDone: Int) throws -> Bool {
        // The fencing check of SegmentStateMachine.check(token:), as one guarded UPDATE (hot path).
        let rows = try db().query("""
            UPDATE segments SET frames_done = least($4, frames_total), updated_at = now()
            WHERE job_id = $1 AND idx = $2 AND state = 'leased' AND lease_token = $3
            """, [.int(Int(ref.job.rawValue)), .int(ref.index), .text(token.description), .int(framesDone)], prepare: true)
        return rows.affectedRows == 1
    }

    // MARK: Taking leases back

    /// A worker handed lease `token` back (stopping, draining): the segment is `pending` again,
    /// without counting a failure.
    package func releaseLease(_ ref: SegmentRef, token: LeaseToken, reason: String, actor: String? = nil)
        throws -> Result<Void, SegmentStateMachine.Rejection> {
        try transaction { c in
            let rec = try lockSegment(c, ref)
            var m = rec.machine
            do throws(SegmentStateMachine.Rejection) {
                try m.release(token: token)
            } catch {
                return .failure(error)
            }
            try writeBack(c, [SegmentChange(ref: ref, old: rec.machine, new: m)], reason: reason, actor: actor ?? rec.leasedBy)
            try notifyWork(c)
            return .success(())
        }
    }

    /// Takes back every lease held by `worker` (it was lost or disconnected): those segments are
    /// `pending` again, no failure counted. Returns them.
    @discardableResult
    package func releaseLeases(worker: String, reason: String, actor: String? = nil) throws -> [SegmentRef] {
        try transaction { c in
            let rows = try c.query("""
                SELECT \(Columns.segment) FROM segments WHERE state = 'leased' AND leased_by = $1
                ORDER BY job_id, idx FOR UPDATE
                """, [.text(worker)], prepare: true)
            return try releaseAll(c, rows, reason: reason, actor: actor)
        }
    }

    /// Takes back every lease past its deadline (`lease_expires_at < now()`). Returns them.
    @discardableResult
    package func expireLeases(actor: String? = nil) throws -> [SegmentRef] {
        try transaction { c in
            let rows = try c.query("""
                SELECT \(Columns.segment) FROM segments WHERE state = 'leased' AND lease_expires_at < now()
                ORDER BY job_id, idx FOR UPDATE SKIP LOCKED
                """, prepare: true)
            return try releaseAll(c, rows, reason: "lease expired", actor: actor)
        }
    }

    /// Extends every lease of `worker` to `seconds` from now (it is alive). Returns how many.
    @discardableResult
    package func renewLeases(worker: String, seconds: Double) throws -> Int {
        try db().query("""
            UPDATE segments SET lease_expires_at = now() + make_interval(secs => $2)
            WHERE state = 'leased' AND leased_by = $1
            """, [.text(worker), .double(seconds)], prepare: true).affectedRows
    }

    // MARK: Internals

    func lockSegment(_ c: PostgresConnection, _ ref: SegmentRef) throws -> SegmentRecord {
        let rows = try c.query("SELECT \(Columns.segment) FROM segments WHERE job_id = $1 AND idx = $2 FOR UPDATE",
                               [.int(Int(ref.job.rawValue)), .int(ref.index)], prepare: true)
        guard let row = rows.first else { throw DubfarmError(.notFound, "there is no segment \(ref)") }
        return try SegmentRecord(row: row)
    }

    private func releaseAll(_ c: PostgresConnection, _ rows: PostgresRows, reason: String, actor: String?) throws -> [SegmentRef] {
        var changes: [SegmentChange] = []
        for row in rows {
            let rec = try SegmentRecord(row: row)
            var m = rec.machine
            do {
                try m.release(token: nil)
            } catch {
                continue
            }
            changes.append(SegmentChange(ref: rec.ref, old: rec.machine, new: m))
        }
        try writeBack(c, changes, reason: reason, actor: actor)
        if !changes.isEmpty { try notifyWork(c) }
        return changes.map(\.ref)
    }

    /// Cancels job `id`'s pending and leased segments (``SegmentStateMachine/cancel()``);
    /// returns the leases that were active.
    func cancelSegments(_ c: PostgresConnection, _ id: JobID, reason: String, actor: String?) throws -> [LeasedSegment] {
        let rows = try c.query("""
            SELECT \(Columns.segment) FROM segments WHERE job_id = $1 AND state IN ('pending', 'leased')
            ORDER BY idx FOR UPDATE
            """, [.int(Int(id.rawValue))], prepare: true)
        var changes: [SegmentChange] = []
        var leases: [LeasedSegment] = []
        for row in rows {
            let rec = try SegmentRecord(row: row)
            if rec.state == .leased, let token = rec.lease {
                leases.append(LeasedSegment(ref: rec.ref, token: token, worker: rec.leasedBy ?? ""))
            }
            var m = rec.machine
            m.cancel()
            changes.append(SegmentChange(ref: rec.ref, old: rec.machine, new: m))
        }
        try writeBack(c, changes, reason: reason, actor: actor)
        // A personalisation still under way ends with its job (its worker's next report is
        // refused and it stops; a retry starts it again from its last checkpoint).
        try c.query("""
            WITH u AS (
                UPDATE personalisations SET state = 'failed', lease_token = NULL, leased_by = NULL, lease_expires_at = NULL,
                    error = coalesce(error, $2), updated_at = now()
                WHERE job_id = $1 AND state IN ('preparing', 'pending', 'leased')
                RETURNING job_id, leased_by
            )
            INSERT INTO events (kind, job_id, worker, to_state, reason, actor)
            SELECT 'personalisation', job_id, leased_by, 'failed', $2, $3 FROM u
            """, [.int(Int(id.rawValue)), .text(reason), .text(actor ?? defaultActor)])
        return leases
    }

    /// Writes the new machines of `changes` (rows already locked) and one event per change, in
    /// two statements whatever their number.
    func writeBack(_ c: PostgresConnection, _ changes: [SegmentChange], reason: String, actor: String?,
                   resetBackoff: Bool = false, clearError: Bool = false) throws {
        let changed = changes.filter { $0.old != $0.new }
        guard !changed.isEmpty else { return }
        try c.query("""
            UPDATE segments s SET state = t.state, lease_token = t.token, leased_by = t.by, failures = t.failures,
                leases = t.leases, updated_at = now(),
                lease_expires_at = CASE WHEN t.state = 'leased' THEN s.lease_expires_at ELSE NULL END,
                frames_done = CASE WHEN t.state = 'pending' THEN 0 ELSE s.frames_done END,
                not_before = CASE WHEN $7 THEN '-infinity'::timestamptz ELSE s.not_before END,
                error = CASE WHEN $8 THEN NULL ELSE s.error END,
                finished_at = CASE WHEN t.state IN ('cancelled', 'dead', 'done') THEN now() ELSE NULL END
            FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[], $6::int[], $9::int[])
                AS t(job_id, idx, state, token, by, failures, leases)
            WHERE s.job_id = t.job_id AND s.idx = t.idx
            """, [.array(changed.map { .int(Int($0.ref.job.rawValue)) }), .array(changed.map { .int($0.ref.index) }),
                  .array(changed.map { .text($0.new.state.rawValue) }),
                  .array(changed.map { $0.new.lease.map { .text($0.description) } }),
                  .array(changed.map { $0.new.leasedBy.map { .text($0) } }),
                  .array(changed.map { .int($0.new.failures) }), .bool(resetBackoff), .bool(clearError),
                  .array(changed.map { .int($0.new.leases) })], prepare: true)
        try c.query("""
            INSERT INTO events (kind, job_id, segment_idx, worker, from_state, to_state, reason, actor)
            SELECT 'segment', t.job_id, t.idx, t.worker, t.from_state, t.to_state, $6, $7
            FROM unnest($1::bigint[], $2::int[], $3::text[], $4::text[], $5::text[]) AS t(job_id, idx, worker, from_state, to_state)
            """, [.array(changed.map { .int(Int($0.ref.job.rawValue)) }), .array(changed.map { .int($0.ref.index) }),
                  .array(changed.map { $0.old.leasedBy.map { .text($0) } }),
                  .array(changed.map { .text($0.old.state.rawValue) }), .array(changed.map { .text($0.new.state.rawValue) }),
                  .text(reason), .text(actor ?? defaultActor)], prepare: true)
    }
}
