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

    typealias Peer = WorkerTable.Peer

    let config: FarmConfiguration
    let store: FarmStore
    let media: MediaStore
    let endpoint: RouterEndpoint
    let logger: Logger
    let onJobReady: @Sendable (JobID) -> Void
    /// The connected workers and what each is doing.
    var peers = WorkerTable()
    /// Open media and result logs of the jobs being worked on.
    var jobs = JobCache<JobMedia, ResultLog>()
    var draining = false
    /// Who is lost, who needs a heartbeat, when leases are renewed and swept.
    var liveness: Liveness
    let name: String
    /// A completion waiting for its group commit, with the result log its record was written to.
    struct PendingCompletion: Sendable {
        var request: FarmStore.CompletionRequest
        var log: ResultLog
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

    /// One group commit (``CompletionCommit``): the records first, then the database that
    /// references them.
    private func commit(_ batch: [PendingCompletion]) async -> [Result<FarmStore.CompletionReply, any Error>] {
        let store = self.store, leaseSeconds = config.leaseSeconds
        return await CompletionCommit.commit(batch.map { ($0.request, $0.log) }, sync: { try $0.sync() },
                                             transaction: { try await store.completeSegments($0, leaseSeconds: leaseSeconds) },
                                             isUnreachable: Self.isUnreachable)
    }

    static func isUnreachable(_ error: any Error) -> Bool { (error as? DubfarmError)?.code == .unreachable }

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
        guard let peer = peers[id] else {
            // Not registered (this coordinator restarted, or the worker was presumed dead). Results
            // are still judged by their lease token; the worker says READY again once it notices
            // that nobody answers its heartbeats.
            switch message {
            case .result, .partial, .failed, .progress, .trained, .trainFailed, .checkpoint, .trainProgress, .trainLeft: break
            default: return
            }
            await handle(message, from: id, workerName: nil)
            return
        }
        peers.heard(id, at: now)
        await handle(message, from: id, workerName: peer.hello.name)
    }

    private func register(_ id: [UInt8], _ hello: WorkerHello) async {
        var log = logger
        log[metadataKey: "worker"] = .string(hello.name)
        let connection = peers.connect(id, hello, now: .now)
        var peer = connection.peer
        let existing = connection.existing
        // A worker that restarted under the same name replaces its old self.
        for old in connection.replaced {
            await releaseLeases(of: old.hello.name, reason: "worker \(hello.name) reconnected as a new process")
        }
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
        peers.store(peer)
        do {
            try await store.workerSeen(WorkerInfo(name: hello.name, host: hello.host, threads: hello.threads,
                                                  model: hello.model, capabilities: ["stage": hello.stage]))
            try await store.setWorkerState(hello.name, peer.isIdle ? .idle : .busy, segment: peer.task?.segment, stage: hello.stage)
            peers.persisted([.init(name: hello.name, state: peer.isIdle ? .idle : .busy, segment: peer.task?.segment)])
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
            guard let peer = peers.remove(id) else { return }
            logger.info("worker disconnected: \(reason)", metadata: ["worker": .string(peer.hello.name)])
            await releaseLeases(of: peer.hello.name, reason: "worker \(peer.hello.name) disconnected: \(reason)")
            try? await store.setWorkerState(peer.hello.name, .gone)
        case .progress(let ref, let done, _):
            if (try? await store.reportProgress(ref.segment, token: ref.token, framesDone: done)) == true {
                peers.progress(id, framesDone: done)
            }
        case .result(let ref, let output, let stats):
            await accept(ref, output: output, stats: stats, from: id, workerName: workerName)
        case .partial(let ref, let frames, let output, let stats):
            await acceptPartial(ref, frames: frames, output: output, stats: stats, from: id, workerName: workerName)
        case .failed(let ref, let failure):
            await failed(ref, failure, from: id, workerName: workerName)
        }
    }

    /// The worker is free again: hand it `next` (a segment claimed together with its result) or
    /// look for work.
    private func finishTask(_ id: [UInt8], _ ref: TaskRef, frames: Int, next: ClaimedSegment? = nil) async {
        guard peers.finish(id, ref, frames: frames) else {
            if let next { _ = try? await store.releaseLease(next.ref, token: next.token, reason: "worker went away", actor: name) }
            return
        }
        if let next {
            peers.beginClaim(all: [id])
            await send(next, to: id)
            peers.endClaim(id)
        } else if !draining {
            await dispatch(to: id)
        }
    }

    private func accept(_ ref: TaskRef, output: PacketBundle, stats: SegmentStats, from id: [UInt8], workerName: String?) async {
        let log = segmentLogger(ref, worker: workerName)
        FarmMetrics.shared.resultArrived(worker: workerName)
        if let peer = peers[id], peer.task == ref, output.packets.count != peer.taskFrames {
            let msg = "worker returned \(output.packets.count) frames for a segment of \(peer.taskFrames)"
            log.error("\(msg)")
            await failed(ref, FailureReport(code: DubfarmError.Code.protocolViolation.rawValue, message: msg), from: id, workerName: workerName)
            return
        }
        if await isLate(ref, "result", log: log) {
            await finishTask(id, ref, frames: 0)
            return
        }
        // The result is appended to the job's result log before the fenced completion: records
        // are never overwritten, and only the one the database accepts is ever read. The write
        // lands in the page cache; the group commit flushes the log before the database may
        // reference the record.
        let record: ResultRecord
        let resultLog: ResultLog
        do {
            resultLog = try jobs.log(for: ref.segment.job) { try MediaStore.openResultLog(media.resultLog(ref.segment.job)) }
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
                    jobs.closeLog(ref.segment.job)
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
        } catch let e as CompletionCommit.ResultNotDurable {
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

    /// A stopping worker's first `frames` frames of its segment (PARTIAL): stored and made
    /// durable as a result is, then the segment is cut after them and the rest planned as a new
    /// segment (``FarmStore/completePartially(_:token:frames:resultBytes:resultOffset:processSeconds:stats:)``),
    /// which the next idle worker gets. Rare (scale-in, node drains), so not group-committed.
    private func acceptPartial(_ ref: TaskRef, frames: Int, output: PacketBundle, stats: SegmentStats, from id: [UInt8],
                               workerName: String?) async {
        let log = segmentLogger(ref, worker: workerName)
        // Only a stopping worker sends one, whatever becomes of it: it is offered no more work
        // (the remainder goes to another).
        peers.markStopping(id)
        if let peer = peers[id], peer.task == ref, frames >= peer.taskFrames || output.packets.count != frames {
            let msg = "worker returned a partial result of \(output.packets.count) packets for \(frames) of a segment of \(peer.taskFrames) frames"
            log.error("\(msg)")
            await failed(ref, FailureReport(code: DubfarmError.Code.protocolViolation.rawValue, message: msg), from: id, workerName: workerName)
            return
        }
        if await isLate(ref, "partial result", log: log) {
            await finishTask(id, ref, frames: 0)
            return
        }
        let record: ResultRecord
        do {
            let resultLog = try jobs.log(for: ref.segment.job) { try MediaStore.openResultLog(media.resultLog(ref.segment.job)) }
            record = try resultLog.write(output, segment: ref.segment.index, token: ref.token)
            // Durable before the database references it, as the group commit does for results.
            try resultLog.sync()
        } catch {
            await resultNotStored(ref, error, from: id, log: log)
            return
        }
        do {
            switch try await store.completePartially(ref.segment, token: ref.token, frames: frames, resultBytes: record.length,
                                                     resultOffset: record.offset, processSeconds: stats.totalSeconds, stats: stats) {
            case .success(let outcome):
                log.notice("partial result kept", metadata: [
                    "frames": .string("\(outcome.finished.lowerBound)..<\(outcome.finished.upperBound)"),
                    "remainder": .string("segment \(outcome.remainder.index), frames \(outcome.remainderFrames.lowerBound)..<\(outcome.remainderFrames.upperBound)")])
                FarmMetrics.shared.segmentCompleted(frames: frames, seconds: stats.totalSeconds)
            case .failure(let rejection):
                log.warning("rejected a partial result with a stale lease token: \(rejection)", metadata: ["token": .stringConvertible(ref.token)])
            }
        } catch {
            // The lease stays: it is released when the worker disconnects or expires, and the
            // whole segment is done again.
            log.error("could not record the partial result: \(error)")
        }
        await finishTask(id, ref, frames: frames)
        if !draining { await dispatchAll() }
    }

    /// A logger naming the job, segment and worker of `ref`.
    private func segmentLogger(_ ref: TaskRef, worker: String?) -> Logger {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.segment.job)
        log[metadataKey: "segment"] = .stringConvertible(ref.segment.index)
        log[metadataKey: "worker"] = .string(worker ?? "unregistered")
        return log
    }

    /// Whether `ref`'s job no longer takes results (stitched, failed, cancelled): such a result
    /// is stale by definition, and writing it would bring back the job's results directory.
    private func isLate(_ ref: TaskRef, _ what: String, log: Logger) async -> Bool {
        guard !jobs.hasLog(ref.segment.job), let job = try? await store.job(ref.segment.job), job.state != .running else { return false }
        log.warning("rejected a \(what) for job \(ref.segment.job), which is \(job.state)", metadata: ["token": .stringConvertible(ref.token)])
        return true
    }

    /// The coordinator could not write or flush `ref`'s result: the segment goes back to the
    /// queue (the disk may recover; it is not the worker's fault).
    private func resultNotStored(_ ref: TaskRef, _ error: any Error, from id: [UInt8], log: Logger) async {
        log.error("cannot store segment result: \(error)")
        _ = try? await store.releaseLease(ref.segment, token: ref.token, reason: "coordinator could not store the result: \(error)", actor: name)
        await finishTask(id, ref, frames: 0)
    }

    private func failed(_ ref: TaskRef, _ failure: FailureReport, from id: [UInt8], workerName: String?) async {
        let log = segmentLogger(ref, worker: workerName)
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
                        jobs.closeMedia(ref.segment.job)
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
        var idle = peers.idleUnclaimed()
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
        peers.beginClaim(all: idle)
        defer { peers.endClaim(all: idle) }
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
        guard !draining, let peer = peers[id], peers.beginClaim(id) else { return }
        defer { peers.endClaim(id) }
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
                _ = peers.weightsSent(id, sha)
                log.info("personalised weights sent", metadata: ["weights": .string(sha), "bytes": .stringConvertible(bytes.count)])
            }
            peers.taskSent(id, ref, frames: claim.frames.count, at: .now)
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
            jobs.closeMedia(claim.ref.job)
        }
    }

    /// Each worker's messages in flight, handled in the order it sent them (``serve(_:)``).
    var deliveries = PeerOrderedDelivery<[UInt8]>()

    /// Cuts the task for `claim` from its job's media (opened on first use).
    private func buildTask(_ claim: ClaimedSegment, _ ref: TaskRef) async throws -> TaskAssignment {
        let job = claim.ref.job
        let jm: JobMedia
        if let cached = jobs.media(for: job, now: .now) {
            jm = cached
        } else {
            guard let record = try await store.job(job) else { throw DubfarmError(.notFound, "job \(job) vanished") }
            jm = try JobMedia(job: record, store: media, defaultStage: config.defaultStage)
            jobs.insert(media: jm, for: job, now: .now)
        }
        return try jm.assignment(for: claim, ref: ref, contextFrames: config.contextFrames, audioMarginSeconds: config.audioMarginSeconds)
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
        for peer in Array(peers.all) {
            let id = peer.identity
            switch liveness.verdict(lastHeard: peer.lastHeard, lastSent: peer.lastSent, now: now) {
            case .lost:
                _ = peers.remove(id)
                logger.warning("worker lost: no heartbeat for \(config.livenessTimeout) s", metadata: ["worker": .string(peer.hello.name)])
                await releaseLeases(of: peer.hello.name, reason: "worker \(peer.hello.name) lost (no heartbeat for \(config.livenessTimeout) s)")
                try? await store.setWorkerState(peer.hello.name, .lost)
            case .heartbeatDue:
                peers.heartbeatSent(id, at: now)
                endpoint.send(to: id, WorkMessage.heartbeat.encode())
            case .fine:
                break
            }
        }
        await persistWorkerStates()
        let (renew, sweepDue) = liveness.housekeeping(now: now)
        if renew {
            for peer in peers.all where peer.task != nil {
                _ = try? await store.renewLeases(worker: peer.hello.name, seconds: config.leaseSeconds)
            }
            for peer in peers.all where peer.training != nil {
                _ = try? await store.renewPersonalisations(worker: peer.hello.name, seconds: config.leaseSeconds)
            }
            try? await store.touchWorkers(peers.all.map(\.hello.name))
        }
        if sweepDue {
            // Leases nobody renews (their worker never came back after a coordinator restart).
            if let expired = try? await store.expireLeases(actor: name), !expired.isEmpty {
                logger.warning("expired \(expired.count) abandoned lease(s): \(expired.map(\.description).joined(separator: ", "))")
            }
            if let expired = try? await store.expirePersonalisations(actor: name), !expired.isEmpty {
                logger.warning("expired abandoned personalisation lease(s) of job(s) \(expired.map(\.description).joined(separator: ", "))")
            }
            jobs.sweep(now: now)
        }
        await dispatchAll()
    }

    /// Writes the worker states that changed (kept out of the per-segment path: the live state
    /// is in ``peers``, the table is for history and dashboards).
    private func persistWorkerStates() async {
        let changed = peers.stateChanges(draining: draining)
        guard !changed.isEmpty else { return }
        // One statement for all of them: with many workers, each finishing a segment every
        // second, a durable transaction per worker and segment would take most of the store's
        // connection away from claims and completions.
        do {
            try await store.setWorkerStates(changed, actor: name)
            peers.persisted(changed)
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
            for peer in peers.holders(of: ref) {
                endpoint.send(to: peer.identity, WorkMessage.cancel(ref).encode())
                logger.info("cancel sent", metadata: ["worker": .string(peer.hello.name), "segment": .stringConvertible(lease.ref)])
            }
        }
    }

    func forget(job: JobID) {
        jobs.close(job)
    }

    // MARK: Shutdown

    /// Stops handing out work; returns how many segments are still being processed.
    func drain() -> Int {
        draining = true
        return peers.busyCount
    }

    /// Says goodbye to every worker (they keep their segments and report to the next coordinator).
    func goodbye() {
        for id in peers.identities { endpoint.send(to: id, WorkMessage.disconnect(reason: "coordinator stopping").encode()) }
    }

    // MARK: Views

    func workerViews() -> [WorkerView] {
        peers.views(now: .now, draining: draining)
    }

    /// Frames in progress per leased segment (for job progress).
    func inFlight() -> [SegmentRef: Int] {
        peers.inFlight()
    }
}
