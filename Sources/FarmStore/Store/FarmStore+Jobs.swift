import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    // MARK: Reading

    /// The job `id`, with its segment counts; `nil` if there is none.
    package func job(_ id: JobID) throws -> JobRecord? {
        let rows = try db().query("SELECT \(Columns.job), counts.* FROM jobs j \(Columns.countsJoin) WHERE j.id = $1",
                                  [.int(Int(id.rawValue))], prepare: true)
        return try rows.first.map(JobRecord.init(row:))
    }

    /// Jobs, newest first, with their segment counts; only those in `state`, with every label
    /// of `labels` and named `name` where given.
    package func jobs(state: JobState? = nil, labels: [String: String] = [:], name: String? = nil, limit: Int = 100) throws -> [JobRecord] {
        let rows = try db().query("""
            SELECT \(Columns.job), counts.* FROM jobs j \(Columns.countsJoin)
            WHERE ($1::text IS NULL OR j.state = $1) AND j.labels @> $3::jsonb AND ($4::text IS NULL OR j.name = $4)
            ORDER BY j.id DESC LIMIT $2
            """, [state.map { .text($0.rawValue) }, .int(limit), .json(try jsonText(labels)), name.map { .text($0) }], prepare: true)
        return try rows.map(JobRecord.init(row:))
    }

    // MARK: Life cycle

    /// Records a new job, `queued`.
    package func createJob(_ new: NewJob, actor: String? = nil) throws -> JobRecord {
        let params = try jsonText(new.params)
        return try transaction { c in
            let row = try c.query("""
                INSERT INTO jobs (video_name, audio_name, face_name, priority, params, submitted_by, name, labels)
                VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8::jsonb) RETURNING id
                """, [.text(new.videoName), .text(new.audioName), new.faceName.map { .text($0) }, .int(new.priority),
                      .json(params), new.submittedBy.map { .text($0) }, new.name.map { .text($0) }, .json(try jsonText(new.labels))],
                prepare: true)[0]
            let id = JobID(try row["id"].decode(Int64.self))
            try recordEvent(c, kind: .job, job: id, from: nil, to: JobState.queued.rawValue, reason: "submitted",
                            actor: actor ?? new.submittedBy)
            return try loadJob(c, id)
        }
    }

    /// Takes the most urgent queued job for planning (`queued → planning`): highest priority,
    /// then oldest. Concurrent callers never get the same job (`SKIP LOCKED`).
    package func claimQueuedJob(actor: String? = nil) throws -> JobRecord? {
        let who = actor ?? defaultActor
        let rows = try db().query("""
            WITH c AS (
                SELECT id FROM jobs WHERE state = 'queued'
                ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED
            ), u AS (
                UPDATE jobs j SET state = 'planning', updated_at = now(), coordinator = $1, stage = 'planning'
                FROM c WHERE j.id = c.id RETURNING j.*
            ), e AS (
                INSERT INTO events (kind, job_id, from_state, to_state, reason, actor)
                SELECT 'job', id, 'queued', 'planning', 'taken for planning', $1 FROM u
            )
            SELECT \(Columns.job) FROM u j
            """, [.text(who)], prepare: true)
        return try rows.first.map(JobRecord.init(row:))
    }

    /// Saves a planning job's plan and starts it (`planning → running`), in one transaction:
    /// the job's video fields are filled and its segments written. When the job already has
    /// these segments (a retried job), or these segments split further by partial results, their
    /// states (done work) are kept.
    ///
    /// A job that asks to be personalised (`personalise`, from its options) becomes
    /// `personalising` instead, with a personalisation `preparing` (or keeps a finished one: a
    /// retried job keeps its weights); its segments are claimable once that is done.
    @discardableResult
    package func savePlan(job id: JobID, plan: PlannedJob, personalise: PersonaliseRequest? = nil, actor: String? = nil) throws -> JobRecord {
        for (k, span) in plan.spans.enumerated() where span.index != k || span.frames.isEmpty {
            throw DubfarmError(.internalError, "plan for job \(id) is malformed at segment \(k) (\(span)); segments must be numbered 0..<n and non-empty")
        }
        let record = try transaction { c in
            let state = try lockJob(c, id)
            guard state == .planning else {
                throw DubfarmError(.badInput, "job \(id) is \(state), not planning; its plan was not saved")
            }
            let existing = try c.query("SELECT idx, start_frame, end_frame FROM segments WHERE job_id = $1 ORDER BY idx",
                                       [.int(Int(id.rawValue))])
            // The plan's segments, or those segments split further by partial results.
            let spans = try existing.map { try $0["start_frame"].decode(Int.self)..<$0["end_frame"].decode(Int.self) }
            let same = SegmentPlanner.refines(spans, plan: plan.spans, frameCount: plan.frameCount)
            if !same {
                try c.query("DELETE FROM segments WHERE job_id = $1", [.int(Int(id.rawValue))])
                try c.query("""
                    INSERT INTO segments (job_id, idx, start_frame, end_frame, frames_total, job_priority, job_created_at)
                    SELECT $1, t.i, t.s, t.e, t.e - t.s, j.priority, j.created_at
                    FROM unnest($2::int[], $3::int[], $4::int[]) AS t(i, s, e), jobs j WHERE j.id = $1
                    """, [.int(Int(id.rawValue)), .array(plan.spans.map { .int($0.index) }),
                          .array(plan.spans.map { .int($0.frames.lowerBound) }),
                          .array(plan.spans.map { .int($0.frames.upperBound) })])
            }
            try c.query("""
                UPDATE jobs SET frame_count = $2, fps_num = $3, fps_den = $4, width = $5, height = $6, rotation = $7,
                    segment_frames = $8, segment_count = $9, plan_data = $10::jsonb
                WHERE id = $1
                """, [.int(Int(id.rawValue)), .int(plan.frameCount), .int(plan.frameRate.num), .int(plan.frameRate.den),
                      .int(plan.width), .int(plan.height), .int(plan.rotation), .int(plan.segmentFrames),
                      .int(same ? spans.count : plan.spans.count), plan.planData.map { .json($0) }])
            let planned = "planned: \(plan.spans.count) segments of \(plan.segmentFrames) frames"
            if let personalise, try startPersonalisation(c, id, personalise, actor: actor) {
                try applyJobTransition(c, id, from: .planning, to: .personalising, reason: planned + "; personalising first",
                                       actor: actor, stage: "personalising: building the dataset")
            } else {
                try applyJobTransition(c, id, from: .planning, to: .running, reason: planned, actor: actor, stage: nil)
                try notifyWork(c)
            }
            return try loadJob(c, id)
        }
        // Fresh statistics keep the claim an index walk: without them the planner may sort every
        // pending segment on each claim (milliseconds per claim for a long video).
        do {
            try db().query("ANALYZE segments, jobs")
        } catch {
            logger.warning("ANALYZE segments failed (claims may be slower until autovacuum runs)",
                           metadata: ["error": "\(error)"])
        }
        return record
    }

    /// Moves job `id` to `state`, enforcing ``DubfarmCore/JobState/canTransition(to:)``, and
    /// records why. `error` is stored when the job fails. To `stitching` only when every segment
    /// is done; to `failed`/`cancelled` its unfinished segments are cancelled (prefer
    /// ``failJob(_:error:actor:)``/``cancelJob(_:reason:actor:)``, which return the active leases).
    @discardableResult
    package func transitionJob(_ id: JobID, to state: JobState, reason: String, actor: String? = nil,
                              error: DubfarmError? = nil) throws -> JobRecord {
        try transaction { c in
            let from = try lockJob(c, id)
            if state == .stitching { try requireAllDone(c, id) }
            try applyJobTransition(c, id, from: from, to: state, reason: reason, actor: actor, error: error)
            if state == .failed || state == .cancelled {
                // Keep the invariant the claim relies on: no pending segments outside running jobs.
                let leases = try cancelSegments(c, id, reason: reason, actor: actor)
                if !leases.isEmpty {
                    logger.warning("job \(id) became \(state) with active leases; use cancelJob/failJob to learn which workers to stop",
                                   metadata: ["leases": "\(leases.map { "\($0.ref)@\($0.worker)" })"])
                }
            }
            return try loadJob(c, id)
        }
    }

    /// Changes job `id`'s priority (its unfinished segments follow) and records the change.
    @discardableResult
    package func setJobPriority(_ id: JobID, _ priority: Int, actor: String? = nil) throws -> JobRecord {
        try transaction { c in
            let state = try lockJob(c, id)
            let old = try c.query("SELECT priority FROM jobs WHERE id = $1", [.int(Int(id.rawValue))])[0]["priority"].decode(Int.self)
            try c.query("UPDATE jobs SET priority = $2, updated_at = now() WHERE id = $1", [.int(Int(id.rawValue)), .int(priority)])
            try c.query("UPDATE segments SET job_priority = $2 WHERE job_id = $1", [.int(Int(id.rawValue)), .int(priority)])
            if old != priority {
                try recordEvent(c, kind: .job, job: id, from: state.rawValue, to: state.rawValue,
                                reason: "priority \(old) → \(priority)", actor: actor ?? defaultActor)
            }
            return try loadJob(c, id)
        }
    }

    /// Says what the coordinator is doing with job `id` (shown by `status`; not a state change).
    package func setJobStage(_ id: JobID, _ stage: String?) throws {
        try db().query("UPDATE jobs SET stage = $2, updated_at = now() WHERE id = $1",
                       [.int(Int(id.rawValue)), stage.map { .text($0) }], prepare: true)
    }

    /// `running → stitching`; refuses while segments are unfinished.
    @discardableResult
    package func markStitching(_ id: JobID, actor: String? = nil) throws -> JobRecord {
        try transaction { c in
            let from = try lockJob(c, id)
            try requireAllDone(c, id)
            try applyJobTransition(c, id, from: from, to: .stitching, reason: "all segments done", actor: actor,
                                   stage: "stitching")
            return try loadJob(c, id)
        }
    }

    /// `stitching → done`, recording how the dub track was fitted and the output's size.
    @discardableResult
    package func finishJob(_ id: JobID, audioFit: AudioFit, outputBytes: Int64, actor: String? = nil) throws -> JobRecord {
        try transaction { c in
            let from = try lockJob(c, id)
            try c.query("UPDATE jobs SET audio_fit = $2, output_bytes = $3 WHERE id = $1",
                        [.int(Int(id.rawValue)), .text(audioFit.storedForm), .int(Int(outputBytes))])
            try applyJobTransition(c, id, from: from, to: .done, reason: "stitched: audio \(audioFit)", actor: actor)
            return try loadJob(c, id)
        }
    }

    /// Fails job `id` with `error` (its message is what the user sees). Its pending and leased
    /// segments are cancelled; returns the leases that were active so their workers can be told
    /// to stop.
    @discardableResult
    package func failJob(_ id: JobID, error: DubfarmError, actor: String? = nil) throws -> [LeasedSegment] {
        try transaction { c in
            let from = try lockJob(c, id)
            try applyJobTransition(c, id, from: from, to: .failed, reason: error.message, actor: actor, error: error)
            return try cancelSegments(c, id, reason: "job failed", actor: actor)
        }
    }

    /// Fails job `id` with a code and message.
    @discardableResult
    package func failJob(_ id: JobID, code: DubfarmError.Code, message: String, actor: String? = nil) throws -> [LeasedSegment] {
        try failJob(id, error: DubfarmError(code, message), actor: actor)
    }

    /// Cancels job `id`: the job and its pending and leased segments become `cancelled`.
    /// Returns the leases that were active (tell those workers CANCEL). Cancelling a cancelled
    /// job does nothing; cancelling a finished one is refused.
    @discardableResult
    package func cancelJob(_ id: JobID, reason: String, actor: String? = nil) throws -> [LeasedSegment] {
        try transaction { c in
            let from = try lockJob(c, id)
            if from == .cancelled { return [] }
            try applyJobTransition(c, id, from: from, to: .cancelled, reason: reason, actor: actor)
            return try cancelSegments(c, id, reason: reason, actor: actor)
        }
    }

    /// Retries a failed or cancelled job: its dead and cancelled segments become pending with fresh
    /// attempts (done ones are kept), the job's worker blocklist is cleared, and the job goes back
    /// to `running` if it was planned (through `queued → planning → running`, each recorded), else
    /// to `queued`.
    @discardableResult
    package func retryJob(_ id: JobID, actor: String? = nil) throws -> JobRecord {
        try transaction { c in
            let from = try lockJob(c, id)
            guard from == .failed || from == .cancelled else {
                throw DubfarmError(.badInput, "job \(id) is \(from); only failed or cancelled jobs can be retried")
            }
            let rows = try c.query("""
                SELECT \(Columns.segment) FROM segments WHERE job_id = $1 AND state IN ('dead', 'cancelled')
                ORDER BY idx FOR UPDATE
                """, [.int(Int(id.rawValue))])
            var changes: [SegmentChange] = []
            for row in rows {
                let rec = try SegmentRecord(row: row)
                var m = rec.machine
                m.reset()
                changes.append(SegmentChange(ref: rec.ref, old: rec.machine, new: m))
            }
            try writeBack(c, changes, reason: "job retried", actor: actor, resetBackoff: true, clearError: true)
            try c.query("DELETE FROM job_worker_failures WHERE job_id = $1", [.int(Int(id.rawValue))])
            try c.query("UPDATE jobs SET error = NULL, error_code = NULL, finished_at = NULL, audio_fit = NULL, output_bytes = NULL WHERE id = $1",
                        [.int(Int(id.rawValue))])
            try applyJobTransition(c, id, from: from, to: .queued, reason: "retried", actor: actor)
            let planned = try c.query("SELECT segment_count IS NOT NULL AS p FROM jobs WHERE id = $1",
                                      [.int(Int(id.rawValue))])[0]["p"].decode(Bool.self)
            if planned {
                try applyJobTransition(c, id, from: .queued, to: .planning, reason: "retried: plan kept", actor: actor)
                let record = try loadJob(c, id)
                if let request = try PersonaliseRequest(options: record.params.options),
                   try startPersonalisation(c, id, request, actor: actor) {
                    try applyJobTransition(c, id, from: .planning, to: .personalising, reason: "retried: plan kept; personalising first",
                                           actor: actor, stage: "personalising: building the dataset")
                } else {
                    try applyJobTransition(c, id, from: .planning, to: .running, reason: "retried: plan kept", actor: actor)
                    try notifyWork(c)
                }
            }
            return try loadJob(c, id)
        }
    }

    /// After a coordinator restart: jobs caught in `planning` go back to `queued` (recorded);
    /// jobs in `stitching`, and running jobs whose segments are all done, are returned to be
    /// stitched (again).
    package func jobsToResume(actor: String? = nil) throws -> ResumeReport {
        try transaction { c in
            let planning = try c.query("SELECT id FROM jobs WHERE state = 'planning' ORDER BY id FOR UPDATE SKIP LOCKED")
            var requeued: [JobID] = []
            for row in planning {
                let id = JobID(try row["id"].decode(Int64.self))
                try applyJobTransition(c, id, from: .planning, to: .queued,
                                       reason: "coordinator restarted during planning", actor: actor)
                requeued.append(id)
            }
            let stitching = try c.query("SELECT \(Columns.job), counts.* FROM jobs j \(Columns.countsJoin) WHERE j.state = 'stitching' ORDER BY j.id")
                .map(JobRecord.init(row:))
            let ready = try c.query("""
                SELECT \(Columns.job), counts.* FROM jobs j \(Columns.countsJoin)
                WHERE j.state = 'running' AND NOT EXISTS (SELECT 1 FROM segments s WHERE s.job_id = j.id AND s.state <> 'done')
                ORDER BY j.id
                """).map(JobRecord.init(row:))
            return ResumeReport(requeued: requeued, stitching: stitching, readyToStitch: ready)
        }
    }

    // MARK: Internals

    /// Locks job `id`'s row and returns its state.
    func lockJob(_ c: PostgresConnection, _ id: JobID) throws -> JobState {
        let rows = try c.query("SELECT state FROM jobs WHERE id = $1 FOR UPDATE", [.int(Int(id.rawValue))], prepare: true)
        guard let row = rows.first else { throw DubfarmError(.notFound, "there is no job \(id)") }
        let text = try row["state"].decode(String.self)
        guard let s = JobState(rawValue: text) else {
            throw DubfarmError(.database, "job \(id) has unknown state \"\(text)\"; is this dubfarm older than the database?")
        }
        return s
    }

    func requireAllDone(_ c: PostgresConnection, _ id: JobID) throws {
        let left = try c.query("SELECT count(*) AS n FROM segments WHERE job_id = $1 AND state <> 'done'",
                               [.int(Int(id.rawValue))])[0]["n"].decode(Int.self)
        guard left == 0 else {
            throw DubfarmError(.internalError, "job \(id) cannot be stitched: \(left) of its segments are not done")
        }
    }

    func loadJob(_ c: PostgresConnection, _ id: JobID) throws -> JobRecord {
        let rows = try c.query("SELECT \(Columns.job), counts.* FROM jobs j \(Columns.countsJoin) WHERE j.id = $1",
                               [.int(Int(id.rawValue))], prepare: true)
        guard let row = rows.first else { throw DubfarmError(.notFound, "there is no job \(id)") }
        return try JobRecord(row: row)
    }

    /// Writes a job transition (row already locked) and its event; refuses illegal ones.
    func applyJobTransition(_ c: PostgresConnection, _ id: JobID, from: JobState, to: JobState, reason: String,
                            actor: String?, error: DubfarmError? = nil, stage: String?? = .none) throws {
        guard from.canTransition(to: to) else {
            throw DubfarmError(.badInput, "job \(id) is \(from) and cannot become \(to)")
        }
        let newStage: String?
        switch stage {
        case .some(let s): newStage = s
        case .none: newStage = to.isTerminal || to == .queued ? nil : to.rawValue
        }
        try c.query("""
            UPDATE jobs SET state = $2, updated_at = now(), stage = $3,
                started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
                finished_at = CASE WHEN $2 IN ('done', 'failed', 'cancelled') THEN now() ELSE NULL END,
                error_code = CASE WHEN $2 = 'failed' THEN $4 ELSE error_code END,
                error = CASE WHEN $2 = 'failed' THEN $5 ELSE error END
            WHERE id = $1
            """, [.int(Int(id.rawValue)), .text(to.rawValue), newStage.map { .text($0) },
                  error.map { .text($0.code.rawValue) }, error.map { .text($0.message) }], prepare: true)
        try recordEvent(c, kind: .job, job: id, from: from.rawValue, to: to.rawValue, reason: reason, actor: actor)
    }
}
