import DubfarmCore

// Per-job personalisation on the work protocol (version 3): the coordinator leases a job's
// fine-tune to a worker that advertises `personalise` (TRAIN, with the dataset built from the
// job's video and the last checkpoint), the worker reports progress (TRAIN-PROGRESS), returns
// checkpoints (CHECKPOINT) and finally the weights (TRAINED), or says it failed (TRAIN-FAILED).
// Segments of a personalised job name the weights' SHA-256 (TASK); the coordinator sends the
// file (WEIGHTS) before the first such task to each worker, which caches it by that hash.

/// One lease of one job's personalisation.
package struct TrainRef: Sendable, Hashable, Codable, CustomStringConvertible {
    package var job: JobID
    package var token: LeaseToken
    package init(job: JobID, token: LeaseToken) {
        self.job = job
        self.token = token
    }
    package var description: String { "\(job)/personalise@\(String(token.description.prefix(8)))" }
}

/// A file of the dataset directory a TRAIN carries (`index.json`, `shard-00000.safetensors`, …).
package struct NamedFile: Sendable, Hashable {
    package var name: String
    package var bytes: [UInt8]
    package init(name: String, bytes: [UInt8]) {
        self.name = name
        self.bytes = bytes
    }

    /// Whether `name` is a plain file name (no directory, nothing hidden): a worker writes the
    /// files under these names, so a path in one must never escape its directory.
    package static func isSafeName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 255 && !name.hasPrefix(".") && !name.contains("/") && !name.contains("\0")
    }
}

/// A worker's place in a data-parallel fine-tune (`torchrun`, one process per worker): rank 0
/// holds the lease and hosts the rendezvous at `endpoint`; the others join it.
package struct TrainGang: Sendable, Hashable {
    package var rank: Int
    package var size: Int
    /// `HOST:PORT` of rank 0's rendezvous.
    package var endpoint: String
    package init(rank: Int, size: Int, endpoint: String) {
        self.rank = rank
        self.size = size
        self.endpoint = endpoint
    }

    /// The endpoint's host and port, or nil when it is not `HOST:PORT` (`[v6]:PORT` allowed).
    package var hostAndPort: (host: String, port: Int)? { Self.split(endpoint) }

    /// `endpoint`'s host and port, or nil when it is not `HOST:PORT` (`[v6]:PORT` allowed; the
    /// brackets are dropped).
    package static func split(_ endpoint: String) -> (host: String, port: Int)? {
        guard let colon = endpoint.lastIndex(of: ":"), let port = Int(endpoint[endpoint.index(after: colon)...]),
              (1...65535).contains(port) else { return nil }
        var host = String(endpoint[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, !host.contains(where: { $0 == " " || $0 == "/" }) else { return nil }
        return (host, port)
    }
}

/// Everything a worker needs to fine-tune the model for one job.
package struct TrainAssignment: Sendable, Hashable {
    package var ref: TrainRef
    /// Seconds of training in all (across every lease: the trainer's checkpoint counts what is spent).
    package var budgetSeconds: Int
    /// Seconds of training between checkpoints sent back.
    package var checkpointSeconds: Int
    /// 1 for the first lease.
    package var attempt: Int
    /// The dataset (`dubfarm-dataset/1`) built from the job's video.
    package var dataset: [NamedFile]
    /// The checkpoint to resume from and its step, if the coordinator holds one.
    package var checkpoint: [UInt8]?
    package var checkpointStep: Int?
    /// Its place in a data-parallel fine-tune; nil: it trains alone.
    package var gang: TrainGang?

    package init(ref: TrainRef, budgetSeconds: Int, checkpointSeconds: Int, attempt: Int, dataset: [NamedFile],
                checkpoint: [UInt8]? = nil, checkpointStep: Int? = nil, gang: TrainGang? = nil) {
        self.gang = gang
        self.ref = ref
        self.budgetSeconds = budgetSeconds
        self.checkpointSeconds = checkpointSeconds
        self.attempt = attempt
        self.dataset = dataset
        self.checkpoint = checkpoint
        self.checkpointStep = checkpointStep
    }
}

/// Where a fine-tune stands.
package struct TrainProgress: Sendable, Hashable {
    package var step: Int
    package var loss: Double?
    /// Seconds of training spent so far (across leases).
    package var elapsed: Double
    package init(step: Int, loss: Double?, elapsed: Double) {
        self.step = step
        self.loss = loss
        self.elapsed = elapsed
    }
}

extension TrainRef {
    func write(_ w: inout ByteWriter) {
        w.i64(job.rawValue)
        w.u64(token.high)
        w.u64(token.low)
    }
    static func read(_ r: inout ByteReader) throws -> TrainRef {
        TrainRef(job: JobID(try r.i64()), token: LeaseToken(high: try r.u64(), low: try r.u64()))
    }
}

extension TrainProgress {
    func write(_ w: inout ByteWriter) {
        w.int(step)
        w.bool(loss != nil)
        w.f64(loss ?? 0)
        w.f64(elapsed)
    }
    static func read(_ r: inout ByteReader) throws -> TrainProgress {
        let step = try r.int(in: 0...Int(Int32.max), "training step")
        let hasLoss = try r.bool()
        let loss = try r.f64()
        return TrainProgress(step: step, loss: hasLoss ? loss : nil, elapsed: try r.f64())
    }
}

extension TrainAssignment {
    /// Header, then one frame with the dataset files back to back (names and sizes in the
    /// header), then the checkpoint (empty: none).
    func encode(into frames: inout [[UInt8]]) {
        var h = ByteWriter(capacity: 256)
        ref.write(&h)
        h.int(budgetSeconds)
        h.int(checkpointSeconds)
        h.int(attempt)
        h.int(checkpointStep ?? -1)
        // A gang of one is written as none.
        let gang = gang.flatMap { $0.size > 1 ? $0 : nil }
        h.int(gang?.rank ?? 0)
        h.int(gang?.size ?? 1)
        h.string(gang?.endpoint ?? "")
        h.u32(UInt32(dataset.count))
        var total = 0
        for f in dataset {
            h.string(f.name)
            h.int(f.bytes.count)
            total += f.bytes.count
        }
        frames.append(h.bytes)
        var body = [UInt8]()
        body.reserveCapacity(total)
        for f in dataset { body.append(contentsOf: f.bytes) }
        frames.append(body)
        frames.append(checkpoint ?? [])
    }

    static func decode(header: inout ByteReader, body: [UInt8], checkpoint: [UInt8]) throws -> TrainAssignment {
        let ref = try TrainRef.read(&header)
        let budget = try header.int(in: 1...Int(Int32.max), "budget seconds")
        let every = try header.int(in: 1...Int(Int32.max), "checkpoint seconds")
        let attempt = try header.int(in: 1...Int(Int32.max), "attempt")
        let step = try header.int(in: -1...Int(Int32.max), "checkpoint step")
        let rank = try header.int(in: 0...1023, "gang rank")
        let size = try header.int(in: 1...1024, "gang size")
        let endpoint = try header.string(max: maxNameBytes)
        var gang: TrainGang?
        if size > 1 {
            gang = TrainGang(rank: rank, size: size, endpoint: endpoint)
            guard rank < size, gang!.hostAndPort != nil else {
                throw DubfarmError(.protocolViolation, "TRAIN: rank \(rank) of \(size) at '\(endpoint.prefix(80))' is not a gang (HOST:PORT)")
            }
        } else if rank != 0 || !endpoint.isEmpty {
            throw DubfarmError(.protocolViolation, "TRAIN: a fine-tune on one worker has rank \(rank) and endpoint '\(endpoint.prefix(80))'")
        }
        let count = try header.count(minElementSize: 12, max: 1 << 16)
        var files: [NamedFile] = []
        var offset = 0
        for _ in 0..<count {
            let name = try header.string(max: maxNameBytes)
            guard NamedFile.isSafeName(name) else { throw DubfarmError(.protocolViolation, "dataset file name '\(name)' is not a plain name") }
            let size = try header.int(in: 0...body.count, "dataset file size")
            guard offset + size <= body.count else { throw DubfarmError(.protocolViolation, "dataset files exceed their frame") }
            files.append(NamedFile(name: name, bytes: Array(body[offset..<offset + size])))
            offset += size
        }
        guard offset == body.count else { throw DubfarmError(.protocolViolation, "dataset frame has \(body.count - offset) bytes no file claims") }
        guard (step >= 0) == !checkpoint.isEmpty else {
            throw DubfarmError(.protocolViolation, "checkpoint frame disagrees with its step")
        }
        return TrainAssignment(ref: ref, budgetSeconds: budget, checkpointSeconds: every, attempt: attempt, dataset: files,
                               checkpoint: checkpoint.isEmpty ? nil : checkpoint, checkpointStep: step >= 0 ? step : nil, gang: gang)
    }
}
