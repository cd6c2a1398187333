import DubfarmCore
import Foundation
import Postgres

/// SQL column lists and row decoders, kept next to each other so they never drift apart.
enum Columns {
    /// Job columns of `jobs j`, plus segment counts when `withCounts` (needs the `counts` lateral join).
    static let job = """
        j.id, j.state, j.priority, j.created_at, j.updated_at, j.started_at, j.finished_at, j.submitted_by,
        j.video_name, j.audio_name, j.face_name, j.stage, j.frame_count, j.fps_num, j.fps_den, j.width, j.height,
        j.rotation, j.segment_frames, j.segment_count, j.audio_fit, j.output_bytes, j.error_code, j.error,
        j.params::text AS params, j.plan_data::text AS plan_data, j.coordinator, j.weights,
        j.name, j.labels::text AS labels, j.media_removed_at
        """

    /// A lateral join adding `n_pending`, `n_leased`, … for `jobs j`.
    static let countsJoin = """
        LEFT JOIN LATERAL (
            SELECT count(*) FILTER (WHERE s.state = 'pending') AS n_pending,
                   count(*) FILTER (WHERE s.state = 'leased') AS n_leased,
                   count(*) FILTER (WHERE s.state = 'done') AS n_done,
                   count(*) FILTER (WHERE s.state = 'dead') AS n_dead,
                   count(*) FILTER (WHERE s.state = 'cancelled') AS n_cancelled
            FROM segments s WHERE s.job_id = j.id) counts ON true
        """

    static let segment = """
        job_id, idx, start_frame, end_frame, state, lease_token, leased_by, lease_expires_at, leases, failures,
        not_before, error, frames_done, frames_total, result_bytes, process_seconds, started_at, finished_at, updated_at
        """

    static let worker = """
        name, host, state, threads, stage, model, capabilities::text AS capabilities, connected_at, last_seen,
        current_job, current_segment, segments_done, frames_done
        """

    static let event = "id, at, kind, job_id, segment_idx, worker, from_state, to_state, reason, actor"
}

extension JobRecord {
    init(row: PostgresRow) throws {
        let stateText = try row["state"].decode(String.self)
        guard let state = JobState(rawValue: stateText) else {
            throw DubfarmError(.database, "job has unknown state \"\(stateText)\"; is this dubfarm older than the database?")
        }
        id = JobID(try row["id"].decode(Int64.self))
        self.state = state
        priority = try row["priority"].decode(Int.self)
        createdAt = try row["created_at"].decode(Date.self)
        updatedAt = try row["updated_at"].decode(Date.self)
        startedAt = try row["started_at"].decode(Date?.self)
        finishedAt = try row["finished_at"].decode(Date?.self)
        submittedBy = try row["submitted_by"].decode(String?.self)
        videoName = try row["video_name"].decode(String.self)
        audioName = try row["audio_name"].decode(String.self)
        faceName = try row["face_name"].decode(String?.self)
        stage = try row["stage"].decode(String?.self)
        frameCount = try row["frame_count"].decode(Int?.self)
        if let n = try row["fps_num"].decode(Int?.self), let d = try row["fps_den"].decode(Int?.self) {
            frameRate = Rational(n, d)
        } else {
            frameRate = nil
        }
        width = try row["width"].decode(Int?.self)
        height = try row["height"].decode(Int?.self)
        rotation = try row["rotation"].decode(Int?.self)
        segmentFrames = try row["segment_frames"].decode(Int?.self)
        segmentCount = try row["segment_count"].decode(Int?.self)
        audioFit = try row["audio_fit"].decode(String?.self).flatMap(AudioFit.init(storedForm:))
        outputBytes = try row["output_bytes"].decode(Int64?.self)
        errorCode = try row["error_code"].decode(String?.self).map { DubfarmError.Code(rawValue: $0) ?? .internalError }
        error = try row["error"].decode(String?.self)
        let paramsText = try row["params"].decode(String.self)
        do {
            params = try JSONDecoder().decode(JobParams.self, from: Data(paramsText.utf8))
        } catch {
            throw DubfarmError(.database, "job \(id) has unreadable params \(paramsText.prefix(200)): \(error)")
        }
        planData = try row["plan_data"].decode(String?.self)
        coordinator = try row["coordinator"].decode(String?.self)
        weights = try row["weights"].decode(String?.self)
        name = try row["name"].decode(String?.self)
        let labelsText = try row["labels"].decode(String.self)
        do {
            labels = try JSONDecoder().decode([String: String].self, from: Data(labelsText.utf8))
        } catch {
            throw DubfarmError(.database, "job \(id) has unreadable labels \(labelsText.prefix(200)): \(error)")
        }
        mediaRemovedAt = try row["media_removed_at"].decode(Date?.self)
        if row["n_pending"].exists, let pending = try row["n_pending"].decode(Int?.self) {
            var c = SegmentCounts()
            c.pending = pending
            c.leased = try row["n_leased"].decode(Int.self)
            c.done = try row["n_done"].decode(Int.self)
            c.dead = try row["n_dead"].decode(Int.self)
            c.cancelled = try row["n_cancelled"].decode(Int.self)
            segments = c
        } else {
            segments = nil
        }
    }
}

extension SegmentState {
    init(stored text: String) throws {
        guard let s = SegmentState(rawValue: text) else {
            throw DubfarmError(.database, "segment has unknown state \"\(text)\"; is this dubfarm older than the database?")
        }
        self = s
    }
}

extension SegmentRecord {
    init(row: PostgresRow) throws {
        ref = SegmentRef(job: JobID(try row["job_id"].decode(Int64.self)), index: try row["idx"].decode(Int.self))
        frames = try row["start_frame"].decode(Int.self)..<row["end_frame"].decode(Int.self)
        state = try SegmentState(stored: row["state"].decode(String.self))
        lease = try row["lease_token"].decode(String?.self).flatMap { LeaseToken(hex: $0) }
        leasedBy = try row["leased_by"].decode(String?.self)
        leaseExpiresAt = try row["lease_expires_at"].decode(Date?.self)
        leases = try row["leases"].decode(Int.self)
        failures = try row["failures"].decode(Int.self)
        let nb = try row["not_before"].decode(Date.self)
        notBefore = nb == .distantPast ? nil : nb
        error = try row["error"].decode(String?.self)
        framesDone = try row["frames_done"].decode(Int.self)
        framesTotal = try row["frames_total"].decode(Int.self)
        resultBytes = try row["result_bytes"].decode(Int64?.self)
        processSeconds = try row["process_seconds"].decode(Double?.self)
        startedAt = try row["started_at"].decode(Date?.self)
        finishedAt = try row["finished_at"].decode(Date?.self)
        updatedAt = try row["updated_at"].decode(Date.self)
    }
}

extension WorkerRecord {
    init(row: PostgresRow) throws {
        name = try row["name"].decode(String.self)
        host = try row["host"].decode(String?.self)
        let st = try row["state"].decode(String.self)
        state = WorkerStatus(rawValue: st) ?? .lost
        threads = try row["threads"].decode(Int?.self)
        stage = try row["stage"].decode(String?.self)
        model = try row["model"].decode(String?.self)
        let caps = try row["capabilities"].decode(String.self)
        capabilities = (try? JSONDecoder().decode([String: String].self, from: Data(caps.utf8))) ?? [:]
        connectedAt = try row["connected_at"].decode(Date.self)
        lastSeen = try row["last_seen"].decode(Date.self)
        if let j = try row["current_job"].decode(Int64?.self), let s = try row["current_segment"].decode(Int?.self) {
            current = SegmentRef(job: JobID(j), index: s)
        } else {
            current = nil
        }
        segmentsDone = try row["segments_done"].decode(Int64.self)
        framesDone = try row["frames_done"].decode(Int64.self)
    }
}

extension EventRecord {
    init(row: PostgresRow) throws {
        id = try row["id"].decode(Int64.self)
        at = try row["at"].decode(Date.self)
        kind = EventKind(rawValue: try row["kind"].decode(String.self)) ?? .job
        job = try row["job_id"].decode(Int64?.self).map { JobID($0) }
        segment = try row["segment_idx"].decode(Int?.self)
        worker = try row["worker"].decode(String?.self)
        from = try row["from_state"].decode(String?.self)
        to = try row["to_state"].decode(String?.self)
        reason = try row["reason"].decode(String?.self)
        actor = try row["actor"].decode(String?.self)
    }
}

/// JSON text of an `Encodable` value, for `jsonb` parameters.
func jsonText<T: Encodable>(_ value: T) throws -> String {
    let e = JSONEncoder()
    e.outputFormatting = .sortedKeys
    return String(decoding: try e.encode(value), as: UTF8.self)
}
