import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    // MARK: Workers

    /// Records that `info.name` is connected (READY, or any message after a restart): inserts it
    /// or refreshes it. A worker that was `gone` or `lost` comes back `idle`, with the change recorded.
    package func workerSeen(_ info: WorkerInfo) throws {
        let caps = try jsonText(info.capabilities)
        try transaction { c in
            let before = try c.query("SELECT state FROM workers WHERE name = $1 FOR UPDATE", [.text(info.name)],
                                     prepare: true).first.map { try $0["state"].decode(String.self) }
            try c.query("""
                INSERT INTO workers (name, host, threads, model, capabilities, state)
                VALUES ($1, $2, $3, $4, $5::jsonb, 'idle')
                ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host, threads = EXCLUDED.threads,
                    model = EXCLUDED.model, capabilities = EXCLUDED.capabilities, last_seen = now(),
                    connected_at = CASE WHEN workers.state IN ('gone', 'lost') THEN now() ELSE workers.connected_at END,
                    state = CASE WHEN workers.state IN ('gone', 'lost') THEN 'idle' ELSE workers.state END
                """, [.text(info.name), info.host.map { .text($0) }, info.threads.map { .int($0) },
                      info.model.map { .text($0) }, .json(caps)], prepare: true)
            if before == nil || before == WorkerStatus.gone.rawValue || before == WorkerStatus.lost.rawValue {
                try recordEvent(c, kind: .worker, worker: info.name, from: before, to: WorkerStatus.idle.rawValue,
                                reason: before == nil ? "joined" : "reconnected", actor: info.name)
            }
        }
    }

    /// Refreshes `last_seen` of the named workers (heartbeats), in one statement.
    package func touchWorkers(_ names: [String]) throws {
        guard !names.isEmpty else { return }
        try db().query("UPDATE workers SET last_seen = now() WHERE name = ANY($1::text[])",
                       [.array(names.map { .text($0) })], prepare: true)
    }

    /// Sets a worker's state and current segment (and optionally its stage, e.g. `lipsync 40%`);
    /// a change of state is recorded as an event.
    package func setWorkerState(_ name: String, _ state: WorkerStatus, segment: SegmentRef? = nil, stage: String? = nil,
                               reason: String? = nil, actor: String? = nil) throws {
        try transaction { c in
            let rows = try c.query("SELECT state FROM workers WHERE name = $1 FOR UPDATE", [.text(name)], prepare: true)
            guard let row = rows.first else { throw DubfarmError(.notFound, "there is no worker named \(name)") }
            let before = try row["state"].decode(String.self)
            try c.query("""
                UPDATE workers SET state = $2, current_job = $3, current_segment = $4, stage = $5, last_seen = now()
                WHERE name = $1
                """, [.text(name), .text(state.rawValue), segment.map { .int(Int($0.job.rawValue)) },
                      segment.map { .int($0.index) }, stage.map { .text($0) }], prepare: true)
            if before != state.rawValue {
                try recordEvent(c, kind: .worker, job: segment?.job, segment: segment?.index, worker: name,
                                from: before, to: state.rawValue, reason: reason, actor: actor)
            }
        }
    }

    /// All workers ever seen, by name.
    package func workers() throws -> [WorkerRecord] {
        try db().query("SELECT \(Columns.worker) FROM workers ORDER BY name", prepare: true).map(WorkerRecord.init(row:))
    }

    // MARK: Events

    /// Events after `afterID` (oldest first), of one job or of all; pass the last id seen to follow.
    package func events(job: JobID? = nil, afterID: Int64 = 0, limit: Int = 1000) throws -> [EventRecord] {
        try db().query("""
            SELECT \(Columns.event) FROM events
            WHERE id > $1 AND ($2::bigint IS NULL OR job_id = $2) ORDER BY id LIMIT $3
            """, [.int(Int(afterID)), job.map { .int(Int($0.rawValue)) }, .int(limit)], prepare: true)
            .map(EventRecord.init(row:))
    }
}
