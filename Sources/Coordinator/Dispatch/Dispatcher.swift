import DubfarmCore
import DurableFiles
import FarmConfig
import FarmProtocol
import FarmStore
import Foundation
import Logging
import Monitoring
import MediaPipeline

/// Hands segments to workers and takes their results: the heart of the work endpoint.
///
/// Runs on a thread of its own (cutting a task reads the media store). Every message from a
/// worker is checked against the lease it claims to answer: the database's lease token decides
/// (fencing), so a late reply from a worker presumed dead never overwrites newer work.
actor Dispatcher {
    let executor: ThreadExecutor
    nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    struct Peer {
        let identity: [UInt8]
        var hello: WorkerHello
        var lastHeard: ContinuousClock.Instant
        var lastSent: ContinuousClock.Instant
        var task: TaskRef?
        var taskStarted: ContinuousClock.Instant?
        /// Frames the current task must return.
        var taskFrames = 0
        var framesDone = 0
        var segmentsDone = 0
        var totalFrames = 0
        var connectedAt = Date()
        var lastSeenDate = Date()
        /// The job it is fine-tuning the model for (`personalise`), if any.
        var training: TrainRef?
        /// Its rank in that fine-tune: 0 holds the lease; 1… joined it (data-parallel).
        var trainingRank = 0
        /// Personalised weights sent to it (by SHA-256): it has them in its cache.
        var weightsSent: Set<String> = []
        /// Neither a segment nor a fine-tune.
        var isIdle: Bool { task == nil && training == nil }
    }

    let config: FarmConfiguration
    let store: FarmStore
    let media: MediaStore
    let endpoint: RouterEndpoint
    let logger: Logger
    let onJobReady: @Sendable (JobID) -> Void
    var peers: [[UInt8]: Peer] = [:]
    /// Idle workers a segment is being claimed and cut for. The actor is re-entered while the
    /// database answers; without this, a tick and a READY could both claim for the same idle
    /// worker, and one of the two leases would be handed straight back.
    var claiming: Set<[UInt8]> = []
    var jobs: [JobID: JobMedia] = [:]
    var draining = false
    /// Who is lost, who needs a heartbeat, when leases are renewed and swept.
    var liveness: Liveness
    let name: String
    /// A completion waiting for its group commit, with the result log its record was written to.
    struct PendingCompletion: Sendable {
        var request: FarmStore.CompletionRequest
        var log: ResultLog
    }
    /// A result whose record could not be made durable: it is not committed.
    struct ResultNotDurable: Error {
        var underlying: any Error
    }
    /// Completions (each with the worker's next claim) are group-committed on this actor's
    /// thread: the results that arrive while one commit is in flight share the next one (one
    /// `fdatasync` per result log, one database round trip, one `COMMIT`).
    var completions = GroupCommitQueue<PendingCompletion, CheckedContinuation<Result<FarmStore.CompletionReply, any Error>, Never>>()

    init(config: FarmConfiguration, store: FarmStore, media: MediaStore, endpoint: RouterEndpoint,
         name: String, logger: Logger, onJobReady: @escaping @Sendable (JobID) -> Void) {
        self.executor = ThreadExecutor(name: "dispatch")
        self.config = config
        self.store = store
        self.media = media
        self.endpoint = endpoint
        self.name = name
        self.logger = logger
        self.onJobReady = onJobReady
        liveness = Liveness(heartbeat: .milliseconds(Int(config.heartbeatInterval * 1000)),
                            silence: .milliseconds(Int(config.livenessTimeout * 1000)), leaseSeconds: config.leaseSeconds, now: .now)
    }

    /// Queues a completion for the next group commit and returns its outcome.
    private func complete(_ pending: PendingCompletion) async -> Result<FarmStore.CompletionReply, any Error> {
        await withCheckedContinuation { waiter in
            if completions.submit(pending, waiter) { Task { await self.drainCompletions() } }
        }
    }

    /// Commits batches until none waits (see ``DubfarmCore/GroupCommitQueue``).
    private func drainCompletions() async {
        while let batch = completions.nextBatch() {
            let replies = await commit(batch.map(\.request))
            for (entry, reply) in zip(batch, replies) { entry.waiter.resume(returning: reply) }
        }
    }

    /// One group commit: the records first, then the database that references them. One flush
    /// covers every record of the batch written to the same log.
    private func commit(_ batch: [PendingCompletion]) async -> [Result<FarmStore.CompletionReply, any Error>] {
        var failed: [ObjectIdentifier: any Error] = [:]
        var synced: Set<ObjectIdentifier> = []
        for pending in batch where synced.insert(ObjectIdentifier(pending.log)).inserted {
            do { try pending.log.sync() } catch { failed[ObjectIdentifier(pending.log)] = error }
        }
        // Only durable records are committed; the replies come back in the batch's order.
        var committed = await commit(batch.filter { failed[ObjectIdentifier($0.log)] == nil }.map(\.request)).makeIterator()
        return batch.map { pending in
            if let error = failed[ObjectIdentifier(pending.log)] { return .failure(ResultNotDurable(underlying: error)) }
            return committed.next()!
        }
    }

    /// Commits `requests` in one transaction; when one of them makes it fail, commits them one
    /// by one so only that one fails.
    private func commit(_ requests: [FarmStore.CompletionRequest]) async -> [Result<FarmStore.CompletionReply, any Error>] {
        guard !requests.isEmpty else { return [] }
        let leaseSeconds = config.leaseSeconds
        do {
            return try await store.completeSegments(requests, leaseSeconds: leaseSeconds).map { .success($0) }
        } catch let e as DubfarmError where e.code == .unreachable || requests.count == 1 {
            return requests.map { _ in .failure(e) }
        } catch {
            var replies: [Result<FarmStore.CompletionReply, any Error>] = []
            for request in requests {
                do { replies.append(.success(try await store.completeSegments([request], leaseSeconds: leaseSeconds)[0])) } catch {
                    replies.append(.failure(error))
                }
            }
            return replies
        }
    }

    // MARK: Messages

    func receive(_ inbound: RouterEndpoint.Inbound) async {
        let message: WorkMessage
        do { message = try WorkMessage.decode(inbound.frames, limits: config.limits) } catch {
            logger.warning("dropped a malformed message on the work endpoint: \(error)")
            return
        }
        let id = inbound.identity
        let now = ContinuousClock.now
        defer { noteStall(since: now) }
        if case .ready(let hello) = message {
            await register(id, hello)
            return
        }
        guard peers[id] != nil else {
            // Not registered (this coordinator restarted, or the worker was presumed dead). Results
            // are still judged by their lease token; the worker says READY again once it notices
            // that nobody answers its heartbeats.
            switch message {
            case .result, .failed, .progress, .trained, .trainFailed, .checkpoint, .trainProgress, .trainLeft: break
            default: return
            }
            await handle(message, from: id, workerName: nil)
            return
        }
        peers[id]!.lastHeard = now
        peers[id]!.lastSeenDate = Date()
        await handle(message, from: id, workerName: peers[id]!.hello.name)
    }

    private func register(_ id: [UInt8], _ hello: WorkerHello) async {
        var log = logger
        log[metadataKey: "worker"] = .string(hello.name)
        // A worker that restarted under the same name replaces its old self.
        for (other, peer) in peers where peer.hello.name == hello.name && other != id {
            peers[other] = nil
            await releaseLeases(of: peer.hello.name, reason: "worker \(hello.name) reconnected as a new process")
        }
        let existing = peers[id]
        var peer = Peer(identity: id, hello: hello, lastHeard: .now, lastSent: .now,
                        task: existing?.task, taskStarted: existing?.taskStarted)
        peer.connectedAt = existing?.connectedAt ?? Date()
        peer.training = existing?.training
        peer.trainingRank = existing?.trainingRank ?? 0
        peer.weightsSent = existing?.weightsSent ?? []
        peer.segmentsDone = existing?.segmentsDone ?? 0
        peer.totalFrames = existing?.totalFrames ?? 0
        if let busy = hello.busyWith {
            // Still working on a segment from before a reconnect or a coordinator restart: keep
            // the lease if it is still the segment's current one.
            let current = (try? await store.segment(busy.segment))?.lease
            if current == busy.token {
                peer.task = busy
                peer.taskStarted = peer.taskStarted ?? .now
                log.info("worker resumed its segment", metadata: ["segment": .stringConvertible(busy.segment)])
            } else {
                peer.task = nil
                endpoint.send(to: id, WorkMessage.cancel(busy).encode())
            }
        } else if let old = existing?.task {
            // It forgot its task (restarted with the same identity): take the lease back.
            _ = try? await store.releaseLease(old.segment, token: old.token, reason: "worker \(hello.name) restarted", actor: name)
            peer.task = nil
        }
        if let training = hello.busyTraining {
            // Still fine-tuning from before a reconnect or a coordinator restart: the lease
            // holder keeps it if its lease is current; a gang member follows its lease holder.
            if hello.busyTrainingRank > 0 {
                peer.training = training
                peer.trainingRank = hello.busyTrainingRank
            } else if let p = try? await store.personalisation(job: training.job), p.state == .leased, p.machine.lease == training.token {
                peer.training = training
                peer.trainingRank = 0
                log.info("worker resumed its personalisation", metadata: ["job": .stringConvertible(training.job)])
            } else {
                peer.training = nil
                endpoint.send(to: id, WorkMessage.cancelTrain(training).encode())
            }
        } else if let old = existing?.training {
            // It forgot its fine-tune (restarted with the same identity): take the lease back.
            if existing!.trainingRank == 0 {
                _ = try? await store.releasePersonalisation(job: old.job, token: old.token, reason: "worker \(hello.name) restarted", actor: name)
                dismissGang(of: old.job)
            }
            peer.training = nil
            peer.trainingRank = 0
        }
        peers[id] = peer
        do {
            try await store.workerSeen(WorkerInfo(name: hello.name, host: hello.host, threads: hello.threads,
                                                  model: hello.model, capabilities: ["stage": hello.stage]))
            try await store.setWorkerState(hello.name, peer.isIdle ? .idle : .busy, segment: peer.task?.segment, stage: hello.stage)
            persisted[hello.name] = (peer.isIdle ? .idle : .busy, peer.task?.segment)
        } catch {
            log.warning("could not record worker: \(error)")
        }
        if existing == nil {
            log.info("worker connected", metadata: ["host": .string(hello.host), "stage": .string(hello.stage),
                                                    "threads": .stringConvertible(hello.threads)])
        }
        await dispatch(to: id)
    }

    private func handle(_ message: WorkMessage, from id: [UInt8], workerName: String?) async {
        switch message {
        case .heartbeat, .ready, .task, .cancel, .weights, .train, .cancelTrain:
            return
        case .trainProgress(let ref, let progress):
            await trainProgress(ref, progress, from: id)
        case .checkpoint(let ref, let progress, let bytes):
            await checkpoint(ref, progress, bytes, from: id, workerName: workerName)
        case .trained(let ref, let progress, let report, let weights):
            await trained(ref, progress, report: report, weights: weights, from: id, workerName: workerName)
        case .trainFailed(let ref, let failure):
            await trainFailed(ref, failure, from: id, workerName: workerName)
        case .trainLeft(let ref, let error):
            await trainLeft(ref, error: error, from: id, workerName: workerName)
        case .disconnect(let reason):
            guard let peer = peers.removeValue(forKey: id) else { return }
            logger.info("worker disconnected: \(reason)", metadata: ["worker": .string(peer.hello.name)])
            await releaseLeases(of: peer.hello.name, reason: "worker \(peer.hello.name) disconnected: \(reason)")
            try? await store.setWorkerState(peer.hello.name, .gone)
        case .progress(let ref, let done, _):
            if (try? await store.reportProgress(ref.segment, token: ref.token, framesDone: done)) == true {
                peers[id]?.framesDone = done
            }
        case .result(let ref, let output, let stats):
            await accept(ref, output: output, stats: stats, from: id, workerName: workerName)
        case .failed(let ref, let failure):
            await failed(ref, failure, from: id, workerName: workerName)
        }
    }

    /// The worker is free again: hand it `next` (a segment claimed together with its result) or
    /// look for work.
    private func finishTask(_ id: [UInt8], _ ref: TaskRef, frames: Int, next: ClaimedSegment? = nil) async {
        guard var peer = peers[id], peer.task == ref else {
            if let next { _ = try? await store.releaseLease(next.ref, token: next.token, reason: "worker went away", actor: name) }
            return
        }
        peer.task = nil
        peer.taskStarted = nil
        peer.framesDone = 0
        peer.segmentsDone += 1
        peer.totalFrames += frames
        peers[id] = peer
        if let next {
            claiming.insert(id)
            await send(next, to: id)
            claiming.remove(id)
        } else if !draining {
            await dispatch(to: id)
        }
    }

    private func accept(_ ref: TaskRef, output: PacketBundle, stats: SegmentStats, from id: [UInt8], workerName: String?) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.segment.job)
        log[metadataKey: "segment"] = .stringConvertible(ref.segment.index)
        log[metadataKey: "worker"] = .string(workerName ?? "unregistered")
        FarmMetrics.shared.resultArrived(worker: workerName)
        if let peer = peers[id], peer.task == ref, output.packets.count != peer.taskFrames {
            let msg = "worker returned \(output.packets.count) frames for a segment of \(peer.taskFrames)"
            log.error("\(msg)")
            await failed(ref, FailureReport(code: DubfarmError.Code.protocolViolation.rawValue, message: msg), from: id, workerName: workerName)
            return
        }
        // The result is appended to the job's result log before the fenced completion: records
        // are never overwritten, and only the one the database accepts is ever read. The write
        // lands in the page cache; the group commit flushes the log before the database may
        // reference the record.
        if resultLogs[ref.segment.job] == nil, let job = try? await store.job(ref.segment.job), job.state != .running {
            // A late result for a job that no longer takes any (stitched, failed, cancelled):
            // stale by definition, and writing it would bring back the job's results directory.
            log.warning("rejected a result for job \(ref.segment.job), which is \(job.state)", metadata: ["token": .stringConvertible(ref.token)])
            await finishTask(id, ref, frames: 0)
            return
        }
        let record: ResultRecord
        let resultLog: ResultLog
        do {
            resultLog = try self.resultLog(for: ref.segment.job)
            record = try resultLog.write(output, segment: ref.segment.index, token: ref.token)
        } catch {
            await resultNotStored(ref, error, from: id, log: log)
            return
        }
        let peer = peers[id]
        var attempt = 0
        while true {
        attempt += 1
        do {
            let (completion, next): (Result<CompletionOutcome, SegmentStateMachine.Rejection>, ClaimedSegment?)
            if attempt == 1 {
                // Commit the result and lease this worker its next segment in one round trip,
                // together with the other results waiting for a commit.
                // A worker that can personalise looks for a fine-tune first (it unblocks a whole
                // job), so it takes its next segment through dispatch(to:), not with the result.
                let claim = peer.flatMap { peer in
                    peer.task == ref && !draining && !peer.hello.canPersonalise
                        ? FarmStore.ClaimRequest(worker: peer.hello.name, stage: peer.hello.stage, model: peer.hello.model) : nil
                }
                (completion, next) = try await complete(PendingCompletion(request: FarmStore.CompletionRequest(
                    ref: ref.segment, token: ref.token, resultBytes: record.length, resultOffset: record.offset,
                    processSeconds: stats.totalSeconds, stats: stats, thenClaim: claim), log: resultLog)).get()
            } else {
                completion = try await store.completeSegments([FarmStore.CompletionRequest(
                    ref: ref.segment, token: ref.token, resultBytes: record.length, resultOffset: record.offset,
                    processSeconds: stats.totalSeconds, stats: stats)], leaseSeconds: config.leaseSeconds)[0].completion
                next = nil
            }
            switch completion {
            case .success(let outcome):
                log.info("segment done", metadata: ["seconds": .string(String(format: "%.2f", stats.totalSeconds))])
                FarmMetrics.shared.segmentCompleted(frames: stats.frames, seconds: stats.totalSeconds)
                if outcome.allDone {
                    // Closed now, so the space is freed as soon as the stitch removes the log.
                    resultLogs[ref.segment.job] = nil
                    onJobReady(ref.segment.job)
                }
            case .failure(let rejection):
                if attempt > 1, (try? await store.results(job: ref.segment.job)[ref.segment.index]?.token) == ref.token {
                    // The first attempt committed before its connection broke: this result is the kept one.
                    log.info("segment done (committed before the database connection was lost)")
                } else {
                    // Its record stays in the log, unreferenced.
                    log.warning("rejected a result with a stale lease token: \(rejection)", metadata: ["token": .stringConvertible(ref.token)])
                }
            }
            await finishTask(id, ref, frames: stats.frames, next: next)
            return
        } catch let e as ResultNotDurable {
            await resultNotStored(ref, e.underlying, from: id, log: log)
            return
        } catch let e as DubfarmError where e.code == .unreachable && attempt < 5 {
            // The database connection broke under this completion; the store reconnects. The
            // result is safe on disk and the completion is fenced, so trying again is harmless.
            log.warning("database connection lost while recording the result; trying again: \(e.message)")
            try? await Task.sleep(for: .milliseconds(200 * attempt))
        } catch {
            log.error("could not record the result: \(error)")
            await finishTask(id, ref, frames: 0)
            return
        }
        }
    }

    /// The coordinator could not write or flush `ref`'s result: the segment goes back to the
    /// queue (the disk may recover; it is not the worker's fault).
    private func resultNotStored(_ ref: TaskRef, _ error: any Error, from id: [UInt8], log: Logger) async {
        log.error("cannot store segment result: \(error)")
        _ = try? await store.releaseLease(ref.segment, token: ref.token, reason: "coordinator could not store the result: \(error)", actor: name)
        await finishTask(id, ref, frames: 0)
    }

    private func failed(_ ref: TaskRef, _ failure: FailureReport, from id: [UInt8], workerName: String?) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.segment.job)
        log[metadataKey: "segment"] = .stringConvertible(ref.segment.index)
        log[metadataKey: "worker"] = .string(workerName ?? "unregistered")
        do {
            if failure.handedBack {
                if case .success = try await store.releaseLease(ref.segment, token: ref.token,
                                                                  reason: "handed back by \(workerName ?? "worker"): \(failure.message)", actor: name) {
                    log.notice("segment handed back")
                }
            } else {
                let code = DubfarmError.Code(rawValue: failure.code) ?? .internalError
                let message = await naming(failure.message, code: code, job: ref.segment.job)
                switch try await store.failSegment(ref.segment, token: ref.token, error: message, code: code, policy: config.retry) {
                case .success(let outcome):
                    log.warning("segment failed: \(failure.message)", metadata: ["failures": .stringConvertible(outcome.failures)])
                    FarmMetrics.shared.segmentFailed(reason: code.rawValue)
                    if outcome.workerBlocklisted && outcome.workerFailuresInJob == FarmStore.blocklistFailures {
                        log.warning("worker blocklisted for this job: \(outcome.workerFailuresInJob) failed segments; it gets no more of them")
                    }
                    if outcome.jobFailed {
                        log.error("job failed: segment \(ref.segment.index) is out of attempts")
                        cancel(outcome.cancelledLeases)
                        jobs[ref.segment.job] = nil
                    }
                case .failure(let rejection):
                    log.notice("ignored a failure report: \(rejection)")
                }
            }
        } catch {
            log.error("could not record the failure: \(error)")
        }
        await finishTask(id, ref, frames: 0)
    }

    /// A worker's report of bad input names the segment and frame, not the user's file (the
    /// worker never sees its name): prefix the file it is about, so the job's error names it.
    private func naming(_ message: String, code: DubfarmError.Code, job: JobID) async -> String {
        guard code == .badInput, let record = try? await store.job(job) else { return message }
        let file = message.contains("source face") ? (record.faceName ?? "the source face") : record.videoName
        return message.hasPrefix(file) ? message : "\(file): \(message)"
    }

    // MARK: Dispatch

    /// Offers work to every idle worker (new jobs planned, backoffs expired).
    func dispatchAll() async {
        guard !draining else { return }
        var idle = peers.values.filter { $0.isIdle && !claiming.contains($0.identity) }.map(\.identity)
        // Workers that can personalise look for a fine-tune first, one by one (they are few),
        // GPU workers before the others.
        let capable = idle.compactMap { peers[$0] }.filter(\.hello.canPersonalise)
        for worker in PersonalisationPlacement.claimOrder(capable.map(placement)) {
            if let id = identity(of: worker.name) { await dispatch(to: id) }
        }
        idle.removeAll { peers[$0]?.hello.canPersonalise == true || peers[$0]?.isIdle != true }
        guard idle.count > 1 else {
            for id in idle { await dispatch(to: id) }
            return
        }
        claiming.formUnion(idle)
        defer { claiming.subtract(idle) }
        // Many idle workers (a job starts, workers join): one round trip claims for all of them.
        let requests = idle.map { id in
            FarmStore.ClaimRequest(worker: peers[id]!.hello.name, stage: peers[id]!.hello.stage, model: peers[id]!.hello.model)
        }
        let claimed: [ClaimedSegment?]
        do { claimed = try await store.claimSegments(requests, leaseSeconds: config.leaseSeconds) } catch {
            logger.error("claiming segments failed: \(error)")
            return
        }
        for (id, claim) in zip(idle, claimed) {
            guard let claim else { continue }
            if let peer = peers[id], peer.isIdle {
                await send(claim, to: id)
            } else {
                _ = try? await store.releaseLease(claim.ref, token: claim.token, reason: "worker went away or became busy", actor: name)
            }
        }
    }

    func dispatch(to id: [UInt8]) async {
        guard !draining, let peer = peers[id], peer.isIdle, !claiming.contains(id) else { return }
        claiming.insert(id)
        defer { claiming.remove(id) }
        if peer.hello.canPersonalise, !PersonalisationPlacement.defers(placement(peer), to: personaliseCandidates(except: id)) {
            do {
                if let claim = try await store.claimPersonalisation(worker: peer.hello.name, leaseSeconds: config.leaseSeconds) {
                    await sendTraining(claim, to: id)
                    return
                }
            } catch {
                logger.error("claiming a personalisation failed: \(error)")
            }
        }
        let claimed: ClaimedSegment?
        do {
            claimed = try await store.claimSegment(worker: peer.hello.name, token: .random(), leaseSeconds: config.leaseSeconds,
                                                   stage: peer.hello.stage, model: peer.hello.model)
        } catch {
            logger.error("claiming a segment failed: \(error)")
            return
        }
        if let claim = claimed { await send(claim, to: id) }
    }

    /// Cuts the task for `claim` and sends it to worker `id`.
    private func send(_ claim: ClaimedSegment, to id: [UInt8]) async {
        let ref = TaskRef(segment: claim.ref, token: claim.token)
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(claim.ref.job)
        log[metadataKey: "segment"] = .stringConvertible(claim.ref.index)
        log[metadataKey: "worker"] = .string(claim.worker)
        do {
            let task = try await buildTask(claim, ref)
            // The worker may have gone (or become busy) while the task was cut.
            guard let peer = peers[id], peer.isIdle else {
                _ = try? await store.releaseLease(claim.ref, token: claim.token, reason: "worker became busy", actor: name)
                return
            }
            if let sha = task.weights, !peer.weightsSent.contains(sha) {
                // The job's personalised weights go first; the worker keeps them by their hash.
                let bytes = try MediaStore.read(media.weights(sha))
                endpoint.send(to: id, WorkMessage.weights(sha256: sha, bytes: bytes).encode())
                peers[id]!.weightsSent.insert(sha)
                log.info("personalised weights sent", metadata: ["weights": .string(sha), "bytes": .stringConvertible(bytes.count)])
            }
            peers[id]!.task = ref
            peers[id]!.taskStarted = .now
            peers[id]!.taskFrames = claim.frames.count
            peers[id]!.framesDone = 0
            peers[id]!.lastSent = .now
            endpoint.send(to: id, WorkMessage.task(task).encode())
            FarmMetrics.shared.taskSent(worker: claim.worker)
            log.debug("task sent", metadata: ["attempt": .stringConvertible(claim.attempt), "packets": .stringConvertible(task.input.packets.count)])
        } catch {
            // The coordinator cannot cut this segment (its media is damaged or gone): that is the
            // segment's failure, not the worker's.
            log.error("cannot prepare the task: \(error)")
            let e = error as? DubfarmError ?? DubfarmError(.io, "\(error)")
            _ = try? await store.failSegment(claim.ref, token: claim.token, error: e.message, code: e.code, policy: config.retry)
            FarmMetrics.shared.segmentFailed(reason: e.code.rawValue)
            jobs[claim.ref.job] = nil
        }
    }

    /// Open result logs of the jobs being worked on (closed with their ``JobMedia``).
    var resultLogs: [JobID: ResultLog] = [:]
    /// Each worker's messages in flight, handled in the order it sent them (``serve(_:)``).
    var deliveries = PeerOrderedDelivery<[UInt8]>()

    /// The result log of `job`, opened (and created) on first use.
    private func resultLog(for job: JobID) throws -> ResultLog {
        if let log = resultLogs[job] { return log }
        let log = try MediaStore.openResultLog(media.resultLog(job))
        if resultLogs.count >= 16, let idle = resultLogs.keys.first(where: { jobs[$0] == nil }) { resultLogs[idle] = nil }
        resultLogs[job] = log
        return log
    }

    private func buildTask(_ claim: ClaimedSegment, _ ref: TaskRef) async throws -> TaskAssignment {
        let jm: JobMedia
        if let cached = jobs[claim.ref.job] {
            jm = cached
        } else {
            guard let job = try await store.job(claim.ref.job) else {
                throw DubfarmError(.notFound, "job \(claim.ref.job) vanished")
            }
            jm = try JobMedia(job: job, store: media, defaultStage: config.defaultStage)
            if jobs.count >= 8, let oldest = jobs.min(by: { $0.value.lastUsed < $1.value.lastUsed }) { jobs[oldest.key] = nil }
            jobs[claim.ref.job] = jm
        }
        jm.lastUsed = .now
        let (bundle, window) = try SegmentCutter.cut(jm.source, frames: claim.frames, context: config.contextFrames)
        // Only stages that read the dub track get its PCM (tens of kilobytes per task).
        let stage = StageCatalog.stage(jm.stage)
        let audio: AudioWindow
        if stage?.usesAudio ?? true {
            let samples = SegmentPlanner.audioSamples(for: window.decodedFrames, frameRate: jm.frameRate, marginSeconds: config.audioMarginSeconds)
            audio = try jm.audioWindow(samples)
        } else {
            audio = AudioWindow(startSample: 0, samples: [])
        }
        return TaskAssignment(ref: ref, stage: jm.stage, outputFrames: claim.frames, decodedFrames: window.decodedFrames,
                              framePTS: window.framePTS, frameRate: jm.frameRate, encoder: jm.encoder, input: bundle,
                              audio: audio, sourceFace: stage?.usesFace ?? true ? jm.face : nil, model: jm.model,
                              weights: jm.weights)
    }

    // MARK: Liveness

    /// Records that handling something took longer than a heartbeat interval (a database call
    /// waited for a reconnect): heartbeats that queued meanwhile must not make workers look dead.
    private func noteStall(since start: ContinuousClock.Instant) {
        liveness.noteStall(since: start, now: .now)
    }

    /// Heartbeats, dead-worker detection, lease renewal and expiry; called every few hundred ms.
    func tick() async {
        let now = ContinuousClock.now
        defer { noteStall(since: now) }
        for (id, peer) in peers {
            switch liveness.verdict(lastHeard: peer.lastHeard, lastSent: peer.lastSent, now: now) {
            case .lost:
                peers[id] = nil
                logger.warning("worker lost: no heartbeat for \(config.livenessTimeout) s", metadata: ["worker": .string(peer.hello.name)])
                await releaseLeases(of: peer.hello.name, reason: "worker \(peer.hello.name) lost (no heartbeat for \(config.livenessTimeout) s)")
                try? await store.setWorkerState(peer.hello.name, .lost)
            case .heartbeatDue:
                peers[id]!.lastSent = now
                endpoint.send(to: id, WorkMessage.heartbeat.encode())
            case .fine:
                break
            }
        }
        await persistWorkerStates()
        let (renew, sweepDue) = liveness.housekeeping(now: now)
        if renew {
            for peer in peers.values where peer.task != nil {
                _ = try? await store.renewLeases(worker: peer.hello.name, seconds: config.leaseSeconds)
            }
            for peer in peers.values where peer.training != nil {
                _ = try? await store.renewPersonalisations(worker: peer.hello.name, seconds: config.leaseSeconds)
            }
            try? await store.touchWorkers(peers.values.map(\.hello.name))
        }
        if sweepDue {
            // Leases nobody renews (their worker never came back after a coordinator restart).
            if let expired = try? await store.expireLeases(actor: name), !expired.isEmpty {
                logger.warning("expired \(expired.count) abandoned lease(s): \(expired.map(\.description).joined(separator: ", "))")
            }
            if let expired = try? await store.expirePersonalisations(actor: name), !expired.isEmpty {
                logger.warning("expired abandoned personalisation lease(s) of job(s) \(expired.map(\.description).joined(separator: ", "))")
            }
            for (job, jm) in jobs where now - jm.lastUsed > .seconds(120) {
                jobs[job] = nil
                resultLogs[job] = nil
            }
        }
        await dispatchAll()
    }

    /// Worker states as last written to the database, so `tick()` writes only changes (kept out
    /// of the per-segment path: the live state is here, the table is for history and dashboards).
    private var persisted: [String: (WorkerStatus, SegmentRef?)] = [:]

    private func persistWorkerStates() async {
        var changed: [FarmStore.WorkerStateUpdate] = []
        for peer in peers.values {
            let state: WorkerStatus = peer.isIdle ? (draining ? .draining : .idle) : .busy
            let current = peer.task?.segment
            if let p = persisted[peer.hello.name], p.0 == state, p.1 == current { continue }
            changed.append(.init(name: peer.hello.name, state: state, segment: current))
        }
        guard !changed.isEmpty else { return }
        // One statement for all of them: with many workers, each finishing a segment every
        // second, a durable transaction per worker and segment would take most of the store's
        // connection away from claims and completions.
        do {
            try await store.setWorkerStates(changed, actor: name)
            for u in changed { persisted[u.name] = (u.state, u.segment) }
        } catch {
            logger.warning("could not record the state of \(changed.count) worker(s): \(error)")
        }
    }

    private func releaseLeases(of worker: String, reason: String) async {
        do {
            let refs = try await store.releaseLeases(worker: worker, reason: reason, actor: name)
            if !refs.isEmpty {
                logger.notice("segments back in the queue: \(refs.map(\.description).joined(separator: ", "))", metadata: ["worker": .string(worker)])
            }
            let jobs = try await store.releasePersonalisations(worker: worker, reason: reason, actor: name)
            for job in jobs { dismissGang(of: job) }
            if !jobs.isEmpty {
                logger.notice("personalisation of job(s) \(jobs.map(\.description).joined(separator: ", ")) back in the queue (resumes from its last checkpoint)",
                              metadata: ["worker": .string(worker)])
            }
        } catch {
            logger.error("could not release the leases of \(worker): \(error)")
        }
    }

    /// Tells the workers holding `leases` to stop (job cancelled or failed).
    func cancel(_ leases: [LeasedSegment]) {
        for lease in leases {
            let ref = TaskRef(segment: lease.ref, token: lease.token)
            for (id, peer) in peers where peer.task == ref {
                endpoint.send(to: id, WorkMessage.cancel(ref).encode())
                logger.info("cancel sent", metadata: ["worker": .string(peer.hello.name), "segment": .stringConvertible(lease.ref)])
            }
        }
    }

    func forget(job: JobID) {
        jobs[job] = nil
        resultLogs[job] = nil
    }

    // MARK: Shutdown

    /// Stops handing out work; returns how many segments are still being processed.
    func drain() -> Int {
        draining = true
        return peers.values.filter { !$0.isIdle }.count
    }

    /// Says goodbye to every worker (they keep their segments and report to the next coordinator).
    func goodbye() {
        for id in peers.keys { endpoint.send(to: id, WorkMessage.disconnect(reason: "coordinator stopping").encode()) }
    }

    // MARK: Views

    func workerViews() -> [WorkerView] {
        let now = ContinuousClock.now
        return peers.values.sorted { $0.hello.name < $1.hello.name }.map { p in
            let ago = now - p.lastHeard
            return WorkerView(name: p.hello.name, host: p.hello.host, state: p.isIdle ? (draining ? "draining" : "idle") : "busy",
                              threads: p.hello.threads, stage: p.hello.stage, model: p.hello.model,
                              current: p.task.map { "\($0.segment.job)/\($0.segment.index)" } ?? p.training.map { "\($0.job)/personalise" },
                              connectedAt: p.connectedAt,
                              lastSeen: Date().addingTimeInterval(-ago.seconds), segmentsDone: p.segmentsDone,
                              framesDone: p.totalFrames + p.framesDone)
        }
    }

    /// Frames in progress per leased segment (for job progress).
    func inFlight() -> [SegmentRef: Int] {
        var out: [SegmentRef: Int] = [:]
        for p in peers.values { if let t = p.task { out[t.segment] = p.framesDone } }
        return out
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}
