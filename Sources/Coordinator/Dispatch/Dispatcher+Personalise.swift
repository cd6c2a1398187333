import Crypto
import DubfarmCore
import DurableFiles
import FarmProtocol
import FarmStore
import Foundation
import Logging

/// Per-job personalisation on the work endpoint: a fine-tune is leased like a segment (fenced by
/// its token, renewed while its worker lives, taken back when the worker is lost), its
/// checkpoints are kept in the media store so another worker resumes from the last one, and the
/// weights it returns are stored by their SHA-256 for the job's segments.
extension Dispatcher {
    /// Sends `claim`'s fine-tune to worker `id`: the job's dataset and the last checkpoint.
    func sendTraining(_ claim: PersonalisationClaim, to id: [UInt8]) async {
        let ref = TrainRef(job: claim.job, token: claim.token)
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(claim.job)
        log[metadataKey: "worker"] = .string(claim.worker)
        do {
            let dataset = try Self.readDataset(media.personaliseDataset(claim.job))
            var checkpoint: [UInt8]?
            if claim.checkpointStep != nil, FileManager.default.fileExists(atPath: media.personaliseCheckpoint(claim.job).path) {
                checkpoint = try MediaStore.read(media.personaliseCheckpoint(claim.job))
            }
            guard let peer = peers[id], peer.isIdle else {
                _ = try? await store.releasePersonalisation(job: claim.job, token: claim.token, reason: "worker became busy", actor: name)
                return
            }
            var task = TrainAssignment(ref: ref, budgetSeconds: claim.budgetSeconds, checkpointSeconds: config.personaliseCheckpointSeconds,
                                       attempt: claim.attempt, dataset: dataset, checkpoint: checkpoint,
                                       checkpointStep: checkpoint == nil ? nil : claim.checkpointStep)
            // Data-parallel: the idle workers like this one at this moment join it (never waited for).
            let members = PersonalisationPlacement.members(for: placement(peer), from: personaliseCandidates(except: id), want: claim.workers)
                .compactMap { identity(of: $0.name) }
            if let endpoint = peer.hello.rendezvous, !members.isEmpty {
                task.gang = TrainGang(rank: 0, size: members.count + 1, endpoint: endpoint)
            }
            peers.trainingSent(id, ref, rank: 0, at: .now)
            endpoint.send(to: id, WorkMessage.train(task).encode())
            if let gang = task.gang {
                for (i, member) in members.enumerated() {
                    var part = task
                    part.gang = TrainGang(rank: i + 1, size: gang.size, endpoint: gang.endpoint)
                    peers.trainingSent(member, ref, rank: i + 1, at: .now)
                    endpoint.send(to: member, WorkMessage.train(part).encode())
                }
            }
            log.info("personalisation sent", metadata: [
                "attempt": .stringConvertible(claim.attempt), "budget_seconds": .stringConvertible(claim.budgetSeconds),
                "resume_step": .string(task.checkpointStep.map(String.init) ?? "none"),
                "dataset_bytes": .stringConvertible(dataset.reduce(0) { $0 + $1.bytes.count }),
                "workers": .stringConvertible(task.gang?.size ?? 1)])
            if task.gang != nil {
                let names = members.compactMap { peers[$0]?.hello.name }
                log.info("data-parallel personalisation", metadata: ["rendezvous": .string(task.gang!.endpoint), "members": .string(names.joined(separator: ","))])
                _ = try? await store.recordPersonalisationGang(job: claim.job, token: claim.token, members: names, actor: name)
            } else if claim.workers > 1 {
                log.notice("the job asked for \(claim.workers) workers; training on this one alone",
                           metadata: ["why": .string(peer.hello.rendezvous == nil ? "it hosts no rendezvous" : "no other idle worker can personalise")])
            }
        } catch {
            // The coordinator cannot read the job's dataset: rebuilding it is the only way on.
            let e = error as? DubfarmError ?? DubfarmError(.io, "\(error)")
            log.error("cannot prepare the personalisation: \(e.message)")
            _ = try? await store.failPersonalisation(job: claim.job, token: claim.token,
                                                     error: DubfarmError(e.code, "the job's dataset cannot be read: \(e.message)"),
                                                     maxAttempts: config.personaliseMaxAttempts, actor: name)
        }
    }

    /// `peer` as the placement rules see it. A worker whose own claim is in flight counts as
    /// idle: if it joins a gang meanwhile, whatever its claim brings back finds it busy and is
    /// released at once (``send(_:to:)``, ``sendTraining(_:to:)``), so the gang does not lose
    /// a worker to a claim that finds nothing.
    func placement(_ peer: Peer) -> PersonalisationPlacement.Worker {
        PersonalisationPlacement.Worker(name: peer.hello.name, device: peer.hello.personaliseDevice, rendezvous: peer.hello.rendezvous,
                                        idle: peer.isIdle)
    }

    /// The connected worker called `name`.
    func identity(of name: String) -> [UInt8]? {
        peers.identity(of: name)
    }

    /// The other workers that can personalise, by name.
    func personaliseCandidates(except id: [UInt8]) -> [PersonalisationPlacement.Worker] {
        peers.all.filter { $0.identity != id && $0.hello.canPersonalise }.sorted { $0.hello.name < $1.hello.name }.map(placement)
    }

    /// Tells the members (ranks 1…) of job `job`'s fine-tune to stop: its lease holder is gone
    /// or done. They stay busy until they say they left (TRAIN-LEFT).
    func dismissGang(of job: JobID) {
        for p in peers.gangMembers(of: job) {
            endpoint.send(to: p.identity, WorkMessage.cancelTrain(p.training!).encode())
        }
    }

    /// A member of a data-parallel fine-tune left it: it is free again.
    func trainLeft(_ ref: TrainRef, error: String?, from id: [UInt8], workerName: String?) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.job)
        log[metadataKey: "worker"] = .string(workerName ?? "unregistered")
        if let error { log.notice("left the data-parallel personalisation: \(error)") } else { log.info("left the data-parallel personalisation") }
        await finishTraining(id, ref)
    }

    /// The files of a dataset directory, as a TRAIN carries them.
    static func readDataset(_ dir: URL) throws -> [NamedFile] {
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() } catch {
            throw DubfarmError(.notFound, "the personalisation dataset \(dir.path) is missing")
        }
        let files = try names.filter { NamedFile.isSafeName($0) }.map { NamedFile(name: $0, bytes: try MediaStore.read(dir.appendingPathComponent($0))) }
        guard files.contains(where: { $0.name == "index.json" }) else {
            throw DubfarmError(.notFound, "the personalisation dataset \(dir.path) has no index.json (incomplete)")
        }
        return files
    }

    func trainProgress(_ ref: TrainRef, _ progress: TrainProgress, from id: [UInt8]) async {
        let current = (try? await store.reportPersonalisationProgress(job: ref.job, token: ref.token, step: progress.step,
                                                                      loss: progress.loss, elapsed: progress.elapsed)) ?? true
        if !current {
            // Its job ended or another lease took over: stop it.
            endpoint.send(to: id, WorkMessage.cancelTrain(ref).encode())
            logger.notice("told a worker to stop a personalisation whose lease is not current", metadata: ["job": .stringConvertible(ref.job)])
        } else {
            // A worker still training from before this coordinator started: its lease is current, keep it.
            peers.trainingResumed(id, ref)
        }
    }

    func checkpoint(_ ref: TrainRef, _ progress: TrainProgress, _ bytes: [UInt8], from id: [UInt8], workerName: String?) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.job)
        log[metadataKey: "worker"] = .string(workerName ?? "unregistered")
        let file = media.personaliseCheckpoint(ref.job)
        let staged = file.deletingLastPathComponent().appendingPathComponent("checkpoint-\(ref.token).pt")
        do {
            try MediaStore.writeAtomically(bytes, to: staged)
            switch try await store.recordPersonalisationCheckpoint(job: ref.job, token: ref.token, step: progress.step,
                                                                    elapsed: progress.elapsed, actor: workerName) {
            case .success:
                // Kept only once the database accepted it: a stale lease never replaces the checkpoint.
                guard rename(staged.path, file.path) == 0 else {
                    throw DubfarmError(.io, "cannot rename \(staged.path) to \(file.path): \(String(cString: strerror(errno)))")
                }
                MediaStore.syncDirectory(file.deletingLastPathComponent())
                log.info("checkpoint kept", metadata: ["step": .stringConvertible(progress.step), "bytes": .stringConvertible(bytes.count)])
            case .failure(let rejection):
                try? FileManager.default.removeItem(at: staged)
                log.warning("rejected a checkpoint: \(rejection)")
                if case .staleToken = rejection { endpoint.send(to: id, WorkMessage.cancelTrain(ref).encode()) }
            }
        } catch {
            try? FileManager.default.removeItem(at: staged)
            log.error("could not keep the checkpoint: \(error)")
        }
    }

    func trained(_ ref: TrainRef, _ progress: TrainProgress, report: String, weights: [UInt8], from id: [UInt8], workerName: String?) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.job)
        log[metadataKey: "worker"] = .string(workerName ?? "unregistered")
        let sha = sha256(weights)
        do {
            let file = media.weights(sha)
            if !FileManager.default.fileExists(atPath: file.path) { try MediaStore.writeAtomically(weights, to: file) }
            switch try await store.completePersonalisation(job: ref.job, token: ref.token, weights: sha, step: progress.step,
                                                           elapsed: progress.elapsed, report: Self.reportJSON(report), actor: workerName) {
            case .success:
                log.info("personalised", metadata: ["weights": .string(sha), "step": .stringConvertible(progress.step),
                                                    "seconds": .string(String(format: "%.0f", progress.elapsed))])
                try? FileManager.default.removeItem(at: media.personaliseCheckpoint(ref.job))
            case .failure(let rejection):
                log.warning("rejected personalised weights: \(rejection)")
            }
        } catch {
            let e = error as? DubfarmError ?? DubfarmError(.io, "\(error)")
            log.error("could not store the personalised weights: \(e.message)")
            _ = try? await store.releasePersonalisation(job: ref.job, token: ref.token,
                                                        reason: "coordinator could not store the weights: \(e.message)", actor: name)
        }
        await finishTraining(id, ref)
    }

    func trainFailed(_ ref: TrainRef, _ failure: FailureReport, from id: [UInt8], workerName: String?) async {
        var log = logger
        log[metadataKey: "job"] = .stringConvertible(ref.job)
        log[metadataKey: "worker"] = .string(workerName ?? "unregistered")
        do {
            if failure.handedBack {
                if case .success = try await store.releasePersonalisation(job: ref.job, token: ref.token,
                                                                           reason: "handed back by \(workerName ?? "worker"): \(failure.message)",
                                                                           actor: name) {
                    log.notice("personalisation handed back")
                }
            } else {
                let code = DubfarmError.Code(rawValue: failure.code) ?? .internalError
                switch try await store.failPersonalisation(job: ref.job, token: ref.token, error: DubfarmError(code, failure.message),
                                                           maxAttempts: config.personaliseMaxAttempts, actor: workerName) {
                case .success(.retry):
                    log.warning("personalisation attempt failed; it resumes from its last checkpoint: \(failure.message)")
                case .success(.fallBackToDefaultWeights):
                    log.error("personalisation failed; the job runs on the default weights, as it asked: \(failure.message)")
                case .success(.failJob):
                    log.error("personalisation failed; the job fails: \(failure.message)")
                case .failure(let rejection):
                    log.notice("ignored a personalisation failure report: \(rejection)")
                }
            }
        } catch {
            log.error("could not record the personalisation failure: \(error)")
        }
        await finishTraining(id, ref)
    }

    /// The worker is free again: look for work for it. When it held the lease, the gang's
    /// members are told to stop (on success they have already left).
    private func finishTraining(_ id: [UInt8], _ ref: TrainRef) async {
        guard let rank = peers.finishTraining(id, ref) else { return }
        if rank == 0 { dismissGang(of: ref.job) }
        if !draining { await dispatch(to: id) }
    }

    /// The trainer's last line as stored (JSON object), or nil when it is not one.
    static func reportJSON(_ text: String) -> String? {
        guard let data = text.data(using: .utf8), (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else { return nil }
        return text
    }
}

/// Hex SHA-256 of `bytes`.
func sha256(_ bytes: [UInt8]) -> String {
    SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
}
