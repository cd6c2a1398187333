import DubfarmCore
import Foundation
import Postgres

/// A job's personalisation as the database holds it (`submit --personalise`).
package struct PersonalisationRecord: Sendable, Hashable {
    package var job: JobID
    package var machine: PersonalisationMachine
    package var budgetSeconds: Int
    package var leaseExpiresAt: Date?
    /// Frames of the job's video in the dataset, once built.
    package var datasetFrames: Int?
    /// Progress of the current or last attempt.
    package var step: Int
    package var loss: Double?
    package var elapsedSeconds: Double
    /// The step the current lease started from (0, or the checkpoint it resumed).
    package var resumedFrom: Int?
    /// SHA-256 of the trained weights, once done.
    package var weights: String?
    /// The trainer's report on the held-back part of the clip (JSON), once done.
    package var report: String?
    package var error: String?
    package var updatedAt: Date
    /// Workers the job asked to train on at once (`--personalise-workers`).
    package var workers: Int
    /// Workers the current (or last) lease trains on: its holder and those that joined it.
    package var worldSize: Int

    package var state: PersonalisationState { machine.state }
}

/// A personalisation leased to a worker.
package struct PersonalisationClaim: Sendable, Hashable {
    package var job: JobID
    package var token: LeaseToken
    package var worker: String
    package var budgetSeconds: Int
    /// The checkpoint to resume from, if the coordinator holds one.
    package var checkpointStep: Int?
    /// 1 for the first lease.
    package var attempt: Int
    /// Workers the job asked to train on at once.
    package var workers: Int = 1
}

extension FarmStore {
    static let personalisationColumns = """
        job_id, state, budget_seconds, fallback, lease_token, leased_by, lease_expires_at, leases, failures, dataset_frames,
        step, loss, elapsed_seconds, checkpoint_step, resumed_from, weights, report::text AS report, error, updated_at,
        workers, world_size
        """

    // MARK: Reading

    /// Job `job`'s personalisation; `nil` when it asked for none.
    package func personalisation(job: JobID) throws -> PersonalisationRecord? {
        try db().query("SELECT \(Self.personalisationColumns) FROM personalisations WHERE job_id = $1",
                       [.int(Int(job.rawValue))], prepare: true).first.map(PersonalisationRecord.init(row:))
    }

    /// Personalisations whose dataset is still to be built (a coordinator builds them; one that
    /// died while building leaves them here for the next).
    package func personalisationsToPrepare() throws -> [JobID] {
        try db().query("""
            SELECT p.job_id FROM personalisations p JOIN jobs j ON j.id = p.job_id
            WHERE p.state = 'preparing' AND j.state = 'personalising' ORDER BY j.priority DESC, j.created_at, j.id
            """, prepare: true).map { JobID(try $0["job_id"].decode(Int64.self)) }
    }

    // MARK: Life cycle

    /// Called by ``savePlan(job:plan:personalise:actor:)`` inside its transaction: gives the job
    /// a personalisation (or keeps the one it has) and says whether the job must wait for it.
    func startPersonalisation(_ c: PostgresConnection, _ id: JobID, _ request: PersonaliseRequest, actor: String?) throws -> Bool {
        let rows = try c.query("SELECT state FROM personalisations WHERE job_id = $1 FOR UPDATE", [.int(Int(id.rawValue))])
        if let row = rows.first {
            let state = try row["state"].decode(String.self)
            if state == PersonalisationState.done.rawValue { return false }
            // A retried job: its checkpoint and dataset are kept, its attempts start afresh.
            try c.query("""
                UPDATE personalisations SET state = 'preparing', lease_token = NULL, leased_by = NULL, lease_expires_at = NULL,
                    failures = 0, error = NULL, budget_seconds = $2, fallback = $3, workers = $4, updated_at = now()
                WHERE job_id = $1
                """, [.int(Int(id.rawValue)), .int(request.seconds), .bool(request.fallback), .int(request.workers)])
            try recordEvent(c, kind: .personalisation, job: id, from: state, to: "preparing", reason: "job planned again", actor: actor)
            return true
        }
        try c.query("INSERT INTO personalisations (job_id, budget_seconds, fallback, workers) VALUES ($1, $2, $3, $4)",
                    [.int(Int(id.rawValue)), .int(request.seconds), .bool(request.fallback), .int(request.workers)])
        try recordEvent(c, kind: .personalisation, job: id, from: nil, to: "preparing",
                        reason: "personalise for \(request.seconds) s\(request.workers > 1 ? " on up to \(request.workers) workers" : "")"
                            + (request.fallback ? " (default weights if it fails)" : ""),
                        actor: actor)
        return true
    }

    /// The dataset of job `job`'s video is built (`frames` frames): the fine-tune can be leased.
    package func personalisationPrepared(job: JobID, frames: Int, actor: String? = nil) throws {
        try transaction { c in
            var rec = try lockPersonalisation(c, job)
            let old = rec.machine
            do throws(PersonalisationMachine.Rejection) { try rec.machine.prepared() } catch {
                throw DubfarmError(.internalError, "job \(job): dataset built, but the personalisation is \(old.state)")
            }
            try c.query("UPDATE personalisations SET dataset_frames = $2 WHERE job_id = $1", [.int(Int(job.rawValue)), .int(frames)])
            try writeBack(c, job, old: old, new: rec.machine, reason: "dataset built: \(frames) frames", actor: actor)
            try c.query("UPDATE jobs SET stage = 'personalising: waiting for a worker', updated_at = now() WHERE id = $1",
                        [.int(Int(job.rawValue))])
            try notifyWork(c)
        }
    }

    /// The dataset could not be built (`error` says why): the job falls back to the default
    /// weights if it asked for that, else fails. Returns what happened.
    @discardableResult
    package func personalisationUnprepared(job: JobID, error: DubfarmError, actor: String? = nil)
        throws -> PersonalisationMachine.FailureOutcome {
        try transaction { c in
            var rec = try lockPersonalisation(c, job)
            let old = rec.machine
            let outcome = rec.machine.giveUp()
            try end(c, job, old: old, new: rec.machine, outcome: outcome, error: error, actor: actor)
            return outcome
        }
    }

    /// Leases the most urgent pending personalisation to `worker` under `token` (jobs by
    /// priority, then age; `FOR UPDATE SKIP LOCKED`). `nil` when none waits.
    package func claimPersonalisation(worker: String, token: LeaseToken = .random(), leaseSeconds: Double) throws -> PersonalisationClaim? {
        let rows = try db().query("""
            WITH c AS (
                SELECT p.job_id FROM personalisations p JOIN jobs j ON j.id = p.job_id
                WHERE p.state = 'pending' AND j.state = 'personalising'
                ORDER BY j.priority DESC, j.created_at, j.id LIMIT 1
                FOR UPDATE OF p SKIP LOCKED
            ), u AS (
                UPDATE personalisations p SET state = 'leased', lease_token = $2, leased_by = $1,
                    lease_expires_at = now() + make_interval(secs => $3), leases = p.leases + 1,
                    resumed_from = coalesce(p.checkpoint_step, 0), step = coalesce(p.checkpoint_step, 0), world_size = 1,
                    updated_at = now()
                FROM c WHERE p.job_id = c.job_id
                RETURNING p.job_id, p.budget_seconds, p.checkpoint_step, p.leases, p.workers
            ), e AS (
                INSERT INTO events (kind, job_id, worker, from_state, to_state, reason, actor)
                SELECT 'personalisation', job_id, $1, 'pending', 'leased',
                       CASE WHEN checkpoint_step IS NULL THEN 'claimed' ELSE 'claimed: resumes from the checkpoint of step ' || checkpoint_step END, $1
                FROM u
            ), s AS (
                UPDATE jobs j SET stage = 'personalising on ' || $1, updated_at = now() FROM u WHERE j.id = u.job_id
            )
            SELECT * FROM u
            """, [.text(worker), .text(token.description), .double(leaseSeconds)])
        return try rows.first.map { row in
            PersonalisationClaim(job: JobID(try row["job_id"].decode(Int64.self)), token: token, worker: worker,
                                 budgetSeconds: try row["budget_seconds"].decode(Int.self),
                                 checkpointStep: try row["checkpoint_step"].decode(Int?.self), attempt: try row["leases"].decode(Int.self),
                                 workers: try row["workers"].decode(Int.self))
        }
    }

    /// Lease `token` of `job` trains data-parallel: its holder and `members` (torchrun ranks
    /// 1…). Recorded for status and events; only the holder's lease fences the reports.
    /// False when the lease is not current.
    @discardableResult
    package func recordPersonalisationGang(job: JobID, token: LeaseToken, members: [String], actor: String? = nil) throws -> Bool {
        try transaction { c in
            let rec = try lockPersonalisation(c, job)
            guard (try? rec.machine.check(token: token)) != nil, let lead = rec.machine.leasedBy else { return false }
            try c.query("UPDATE personalisations SET world_size = $2, updated_at = now() WHERE job_id = $1",
                        [.int(Int(job.rawValue)), .int(members.count + 1)])
            let on = "\(lead) + \(members.count) more, data-parallel"
            try c.query("UPDATE jobs SET stage = $2, updated_at = now() WHERE id = $1", [.int(Int(job.rawValue)), .text("personalising on \(on)")])
            try recordEvent(c, kind: .personalisation, job: job, worker: lead, from: "leased", to: "leased",
                            reason: "training on \(members.count + 1) workers (\(([lead] + members).joined(separator: ", ")))", actor: actor)
            return true
        }
    }

    /// Records the worker's progress under lease `token`; false when the lease is not current
    /// (the worker should stop).
    package func reportPersonalisationProgress(job: JobID, token: LeaseToken, step: Int, loss: Double?, elapsed: Double) throws -> Bool {
        try db().query("""
            UPDATE personalisations SET step = $3, loss = $4, elapsed_seconds = $5, updated_at = now()
            WHERE job_id = $1 AND state = 'leased' AND lease_token = $2
              AND EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND state = 'personalising')
            """, [.int(Int(job.rawValue)), .text(token.description), .int(step), loss.map { .double($0) }, .double(elapsed)],
            prepare: true).affectedRows == 1
    }

    /// Keeps the checkpoint of step `step` (already written to the media store by the caller)
    /// as the one a new lease resumes from. Fenced by `token`.
    package func recordPersonalisationCheckpoint(job: JobID, token: LeaseToken, step: Int, elapsed: Double, actor: String? = nil)
        throws -> Result<Void, PersonalisationMachine.Rejection> {
        try transaction { c in
            var rec = try lockPersonalisation(c, job)
            let old = rec.machine
            do throws(PersonalisationMachine.Rejection) { try rec.machine.checkpoint(token: token, step: step) } catch {
                return .failure(error)
            }
            try c.query("UPDATE personalisations SET elapsed_seconds = $2 WHERE job_id = $1", [.int(Int(job.rawValue)), .double(elapsed)])
            try writeBack(c, job, old: old, new: rec.machine, reason: nil, actor: actor)
            return .success(())
        }
    }

    /// Accepts the trained weights (`weights`: the SHA-256 of the file, already in the media
    /// store) of lease `token`: the job runs its segments on them (`personalising → running`).
    package func completePersonalisation(job: JobID, token: LeaseToken, weights: String, step: Int, elapsed: Double,
                                        report: String?, actor: String? = nil) throws -> Result<Void, PersonalisationMachine.Rejection> {
        try transaction { c in
            let from = try lockJob(c, job)
            guard from == .personalising else { return .failure(.jobNotPersonalising(from)) }
            var rec = try lockPersonalisation(c, job)
            let old = rec.machine
            do throws(PersonalisationMachine.Rejection) { try rec.machine.complete(token: token) } catch {
                return .failure(error)
            }
            try c.query("""
                UPDATE personalisations SET weights = $2, step = $3, elapsed_seconds = $4, report = $5::jsonb WHERE job_id = $1
                """, [.int(Int(job.rawValue)), .text(weights), .int(step), .double(elapsed), report.map { .json($0) }])
            try writeBack(c, job, old: old, new: rec.machine, reason: "trained \(step) steps in \(Int(elapsed)) s: weights \(weights.prefix(16))",
                          actor: actor ?? old.leasedBy)
            try c.query("UPDATE jobs SET weights = $2 WHERE id = $1", [.int(Int(job.rawValue)), .text(weights)])
            try applyJobTransition(c, job, from: from, to: .running, reason: "personalised: weights \(weights.prefix(16))",
                                   actor: actor ?? old.leasedBy, stage: nil)
            try notifyWork(c)
            return .success(())
        }
    }

    /// Records a failed attempt of lease `token`: another lease resumes from the last checkpoint
    /// until `maxAttempts` failed; then the job runs on the default weights if it asked for that,
    /// else fails with `error`. A `badInput` error ends it at once.
    package func failPersonalisation(job: JobID, token: LeaseToken, error: DubfarmError, maxAttempts: Int, actor: String? = nil)
        throws -> Result<PersonalisationMachine.FailureOutcome, PersonalisationMachine.Rejection> {
        try transaction { c in
            var rec = try lockPersonalisation(c, job)
            let old = rec.machine
            let outcome: PersonalisationMachine.FailureOutcome
            do throws(PersonalisationMachine.Rejection) {
                outcome = try rec.machine.fail(token: token, maxAttempts: maxAttempts, permanent: error.code == .badInput)
            } catch {
                return .failure(error)
            }
            if outcome == .retry {
                try c.query("UPDATE personalisations SET error = $2 WHERE job_id = $1", [.int(Int(job.rawValue)), .text(error.message)])
                try writeBack(c, job, old: old, new: rec.machine, reason: "attempt failed: \(error.message)", actor: actor ?? old.leasedBy)
                try c.query("UPDATE jobs SET stage = 'personalising: waiting for a worker', updated_at = now() WHERE id = $1",
                            [.int(Int(job.rawValue))])
                try notifyWork(c)
            } else {
                try end(c, job, old: old, new: rec.machine, outcome: outcome, error: error, actor: actor ?? old.leasedBy)
            }
            return .success(outcome)
        }
    }

    /// Takes back the personalisation leases of `worker` (lost, disconnected, restarted): they
    /// are `pending` again, no failure counted; the next lease resumes from the last checkpoint.
    @discardableResult
    package func releasePersonalisations(worker: String, reason: String, actor: String? = nil) throws -> [JobID] {
        try transaction { c in
            let rows = try c.query("""
                SELECT \(Self.personalisationColumns) FROM personalisations WHERE state = 'leased' AND leased_by = $1
                ORDER BY job_id FOR UPDATE
                """, [.text(worker)])
            return try releaseAll(c, rows, reason: reason, actor: actor)
        }
    }

    /// Takes back the lease `token` of `job` (the worker handed it back).
    package func releasePersonalisation(job: JobID, token: LeaseToken, reason: String, actor: String? = nil)
        throws -> Result<Void, PersonalisationMachine.Rejection> {
        try transaction { c in
            var rec = try lockPersonalisation(c, job)
            let old = rec.machine
            do throws(PersonalisationMachine.Rejection) { try rec.machine.release(token: token) } catch {
                return .failure(error)
            }
            try writeBack(c, job, old: old, new: rec.machine, reason: reason, actor: actor ?? old.leasedBy)
            try notifyWork(c)
            return .success(())
        }
    }

    /// Takes back every personalisation lease past its deadline. Returns their jobs.
    @discardableResult
    package func expirePersonalisations(actor: String? = nil) throws -> [JobID] {
        try transaction { c in
            let rows = try c.query("""
                SELECT \(Self.personalisationColumns) FROM personalisations WHERE state = 'leased' AND lease_expires_at < now()
                ORDER BY job_id FOR UPDATE SKIP LOCKED
                """)
            return try releaseAll(c, rows, reason: "lease expired", actor: actor)
        }
    }

    /// Extends `worker`'s personalisation leases to `seconds` from now.
    @discardableResult
    package func renewPersonalisations(worker: String, seconds: Double) throws -> Int {
        try db().query("""
            UPDATE personalisations SET lease_expires_at = now() + make_interval(secs => $2)
            WHERE state = 'leased' AND leased_by = $1
            """, [.text(worker), .double(seconds)], prepare: true).affectedRows
    }

    // MARK: Internals

    func lockPersonalisation(_ c: PostgresConnection, _ job: JobID) throws -> PersonalisationRecord {
        let rows = try c.query("SELECT \(Self.personalisationColumns) FROM personalisations WHERE job_id = $1 FOR UPDATE",
                               [.int(Int(job.rawValue))], prepare: true)
        guard let row = rows.first else { throw DubfarmError(.notFound, "job \(job) has no personalisation") }
        return try PersonalisationRecord(row: row)
    }

    private func releaseAll(_ c: PostgresConnection, _ rows: PostgresRows, reason: String, actor: String?) throws -> [JobID] {
        var released: [JobID] = []
        for row in rows {
            var rec = try PersonalisationRecord(row: row)
            let old = rec.machine
            do throws(PersonalisationMachine.Rejection) { try rec.machine.release(token: nil) } catch { continue }
            try writeBack(c, rec.job, old: old, new: rec.machine, reason: reason, actor: actor ?? old.leasedBy)
            try c.query("UPDATE jobs SET stage = 'personalising: waiting for a worker', updated_at = now() WHERE id = $1",
                        [.int(Int(rec.job.rawValue))])
            released.append(rec.job)
        }
        if !released.isEmpty { try notifyWork(c) }
        return released
    }

    /// Ends a personalisation that will not be retried: the job runs on the default weights or fails.
    private func end(_ c: PostgresConnection, _ job: JobID, old: PersonalisationMachine, new: PersonalisationMachine,
                     outcome: PersonalisationMachine.FailureOutcome, error: DubfarmError, actor: String?) throws {
        try c.query("UPDATE personalisations SET error = $2 WHERE job_id = $1", [.int(Int(job.rawValue)), .text(error.message)])
        try writeBack(c, job, old: old, new: new, reason: error.message, actor: actor)
        let from = try lockJob(c, job)
        guard from == .personalising else { return }
        switch outcome {
        case .fallBackToDefaultWeights:
            try applyJobTransition(c, job, from: from, to: .running,
                                   reason: "personalisation failed (\(error.message)): running on the default weights, as the job asked",
                                   actor: actor, stage: nil)
            try notifyWork(c)
        case .failJob, .retry:
            let e = DubfarmError(error.code, "personalisation failed: \(error.message) (submit with --personalise-fallback to dub with the default weights instead)")
            try applyJobTransition(c, job, from: from, to: .failed, reason: e.message, actor: actor, error: e)
            _ = try cancelSegments(c, job, reason: "job failed", actor: actor)
        }
    }

    private func writeBack(_ c: PostgresConnection, _ job: JobID, old: PersonalisationMachine, new: PersonalisationMachine,
                           reason: String?, actor: String?) throws {
        try c.query("""
            UPDATE personalisations SET state = $2, lease_token = $3, leased_by = $4,
                lease_expires_at = CASE WHEN $2 = 'leased' THEN lease_expires_at ELSE NULL END,
                failures = $5, leases = $6, checkpoint_step = $7, updated_at = now()
            WHERE job_id = $1
            """, [.int(Int(job.rawValue)), .text(new.state.rawValue), new.lease.map { .text($0.description) },
                  new.leasedBy.map { .text($0) }, .int(new.failures), .int(new.leases), new.checkpointStep.map { .int($0) }],
            prepare: true)
        if old.state != new.state {
            try recordEvent(c, kind: .personalisation, job: job, worker: old.leasedBy ?? new.leasedBy,
                            from: old.state.rawValue, to: new.state.rawValue, reason: reason, actor: actor)
        }
    }
}

extension PersonalisationRecord {
    init(row: PostgresRow) throws {
        let stateText = try row["state"].decode(String.self)
        guard let state = PersonalisationState(rawValue: stateText) else {
            throw DubfarmError(.database, "personalisation has unknown state \"\(stateText)\"; is this dubfarm older than the database?")
        }
        job = JobID(try row["job_id"].decode(Int64.self))
        machine = PersonalisationMachine(
            state: state, lease: try row["lease_token"].decode(String?.self).flatMap { LeaseToken(hex: $0) },
            leasedBy: try row["leased_by"].decode(String?.self), failures: try row["failures"].decode(Int.self),
            leases: try row["leases"].decode(Int.self), checkpointStep: try row["checkpoint_step"].decode(Int?.self),
            fallback: try row["fallback"].decode(Bool.self))
        budgetSeconds = try row["budget_seconds"].decode(Int.self)
        leaseExpiresAt = try row["lease_expires_at"].decode(Date?.self)
        datasetFrames = try row["dataset_frames"].decode(Int?.self)
        step = try row["step"].decode(Int.self)
        loss = try row["loss"].decode(Double?.self)
        elapsedSeconds = try row["elapsed_seconds"].decode(Double.self)
        resumedFrom = try row["resumed_from"].decode(Int?.self)
        weights = try row["weights"].decode(String?.self)
        report = try row["report"].decode(String?.self)
        error = try row["error"].decode(String?.self)
        updatedAt = try row["updated_at"].decode(Date.self)
        workers = try row["workers"].decode(Int.self)
        worldSize = try row["world_size"].decode(Int.self)
    }
}
