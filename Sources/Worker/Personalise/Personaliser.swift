import DubfarmCore
import FarmProtocol
import Foundation
import Logging

/// Runs one job's fine-tune on this worker: writes the dataset and the checkpoint the TRAIN
/// carries to a private directory, runs the trainer (`python -m dubtrain.personalise`, see
/// docs/training.md, "Per-job personalisation") and turns its JSON lines into reports.
///
/// The trainer is a child process: a cancelled or handed-back fine-tune is stopped with SIGTERM,
/// on which the trainer writes a checkpoint first (sent back like the others).
package struct Personaliser: Sendable {
    /// The Python interpreter of the trainer's environment.
    package var python: String
    /// The `training/` directory (holds the `dubtrain` package).
    package var trainerDirectory: URL
    /// The base weights directory (`manifest.json` + `model.safetensors`) the fine-tune starts from.
    package var baseModel: URL
    /// Where each fine-tune gets a private directory (removed when it ends).
    package var workDirectory: URL
    package var threads: Int
    /// The trainer's device: `cpu`, `cuda`, or `auto` (``resolveDevice()`` asks the trainer's torch).
    package var device: String
    /// `HOST:PORT` where this worker hosts the rendezvous of a data-parallel fine-tune as rank
    /// 0; nil: it only joins others' (``Rendezvous``).
    package var rendezvous: String?

    package init(python: String, trainerDirectory: URL, baseModel: URL, workDirectory: URL, threads: Int,
                device: String = "cpu", rendezvous: String? = nil) {
        self.python = python
        self.trainerDirectory = trainerDirectory
        self.baseModel = baseModel
        self.workDirectory = workDirectory
        self.threads = threads
        self.device = device
        self.rendezvous = rendezvous
    }

    /// The capabilities a worker with this personaliser advertises: `personalise`, its device
    /// when not the CPU, and its rendezvous.
    package var capabilities: [String] {
        [WorkerHello.personaliseCapability] + (device == "cpu" ? [] : [WorkerHello.personaliseDevicePrefix + device])
            + (rendezvous.map { [WorkerHello.rendezvousPrefix + $0] } ?? [])
    }

    /// `device` with `auto` settled: `cuda` when the trainer's torch sees a GPU, else `cpu`.
    /// Throws when `cuda` is asked for and there is none.
    package func resolveDevice() throws -> String {
        guard device == "auto" || device == "cuda" else {
            guard device == "cpu" else { throw DubfarmError(.configuration, "--personalise-device \(device): expected auto, cpu or cuda") }
            return device
        }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"]
        let out = Pipe()
        process.standardOutput = out
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch {
            throw DubfarmError(.configuration, "cannot run \(python) to find the trainer's device: \(error.localizedDescription)")
        }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw DubfarmError(.configuration, "\(python) cannot import torch (status \(process.terminationStatus)); run `make py-deps` or pass --python")
        }
        if device == "cuda" && text != "cuda" {
            throw DubfarmError(.configuration, "--personalise-device cuda: the trainer's torch (\(python)) sees no CUDA device")
        }
        return text
    }

    /// What a finished fine-tune returns (on the lease holder; a gang member returns none).
    package struct Outcome: Sendable {
        package var progress: TrainProgress
        /// The trainer's last line (JSON), with the held-back part's figures.
        package var report: String
        package var weights: [UInt8]
    }

    /// One line of the trainer's output (its protocol; one JSON object per line).
    struct Event: Decodable {
        var event: String
        var step: Int?
        var loss: Double?
        var elapsed: Double?
        var path: String?
        var weights: String?
        /// `failed`: why (`unusable`, `stopped`, `peers`) and what happened.
        var reason: String?
        var message: String?
    }

    /// Checks that the trainer can run here (its interpreter and package exist), so a worker
    /// that advertises `personalise` says at start, not at its first job, what is missing.
    package func check() throws {
        let package = trainerDirectory.appendingPathComponent("dubtrain/personalise.py")
        guard FileManager.default.fileExists(atPath: package.path) else {
            throw DubfarmError(.configuration, "--personalise: the trainer is not at \(package.path); pass --trainer-dir (the repository's training/ directory)")
        }
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw DubfarmError(.configuration, "--personalise: no Python interpreter at \(python); pass --python (the trainer's virtual environment, `make py-deps` makes .venv)")
        }
        for f in ["manifest.json", "model.safetensors"] where !FileManager.default.fileExists(atPath: baseModel.appendingPathComponent(f).path) {
            throw DubfarmError(.configuration, "--personalise needs a weights directory as --model; \(baseModel.path) has no \(f)")
        }
    }

    /// The command that runs `task`'s trainer: `python -m dubtrain.personalise …` alone, or
    /// under `torchrun` (one process on this worker, rank `gang.rank` of `gang.size`) when the
    /// fine-tune is data-parallel.
    func command(_ task: TrainAssignment, data: URL, out: URL, resume: URL?) throws -> [String] {
        var trainer = ["-m", "dubtrain.personalise", "--base", baseModel.path, "--data", data.path, "--out", out.path,
                       "--seconds", String(task.budgetSeconds), "--checkpoint-every", String(task.checkpointSeconds),
                       "--threads", String(threads), "--device", device,
                       // Its stdin is a pipe this worker holds: the trainer stops when the worker is gone.
                       "--stop-on-stdin-eof"]
        if let resume { trainer += ["--resume", resume.path] }
        guard let gang = task.gang, gang.size > 1 else { return trainer }
        guard let (host, port) = gang.hostAndPort else {
            throw DubfarmError(.protocolViolation, "the fine-tune's rendezvous '\(gang.endpoint)' is not HOST:PORT")
        }
        return ["-m", "torch.distributed.run", "--nnodes", String(gang.size), "--node-rank", String(gang.rank), "--nproc-per-node", "1",
                "--master-addr", host, "--master-port", String(port), "--max-restarts", "0"] + trainer
    }

    /// The interface a gang's collectives use (`GLOO_SOCKET_IFNAME`, `NCCL_SOCKET_IFNAME`): the
    /// one holding this worker's rendezvous address, the address that reaches the coordinator.
    /// What the environment sets already wins.
    func gangEnvironment(_ environment: [String: String]) -> [String: String] {
        guard let host = rendezvous.flatMap({ TrainGang.split($0)?.host }),
              let interface = Rendezvous.interface(holding: host) else { return [:] }
        return ["GLOO_SOCKET_IFNAME": interface, "NCCL_SOCKET_IFNAME": interface]
    }

    /// Runs the fine-tune of `task` to its end. `report` gets progress and checkpoints as they
    /// come; `cancelled` is polled (a true stops the trainer, which checkpoints first). A gang
    /// member (rank ≥ 1) reports nothing and returns nil: its lease holder returns the weights.
    package func run(_ task: TrainAssignment, logger: Logger, cancelled: @escaping @Sendable () -> Bool,
                    report: @escaping @Sendable (WorkMessage) -> Void) throws -> Outcome? {
        let dir = workDirectory.appendingPathComponent("personalise-\(task.ref.job)-\(UUID().uuidString.prefix(8))")
        let data = dir.appendingPathComponent("data"), out = dir.appendingPathComponent("out")
        defer { try? FileManager.default.removeItem(at: dir) }
        do {
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
            for f in task.dataset {
                guard NamedFile.isSafeName(f.name) else { throw DubfarmError(.protocolViolation, "dataset file name '\(f.name)'") }
                try Data(f.bytes).write(to: data.appendingPathComponent(f.name))
            }
        } catch let e as DubfarmError {
            throw e
        } catch {
            throw DubfarmError(.io, "cannot write the job's dataset to \(dir.path): \(error.localizedDescription)")
        }
        var resume: URL?
        if let checkpoint = task.checkpoint {
            resume = dir.appendingPathComponent("resume.pt")
            do { try Data(checkpoint).write(to: resume!) } catch {
                throw DubfarmError(.io, "cannot write the checkpoint to \(resume!.path): \(error.localizedDescription)")
            }
        }
        let arguments = try command(task, data: data, out: out, resume: resume)
        let member = (task.gang?.rank ?? 0) > 0

        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = arguments
        process.currentDirectoryURL = trainerDirectory
        var environment = ProcessInfo.processInfo.environment
        environment["PYTHONPATH"] = trainerDirectory.path + (environment["PYTHONPATH"].map { ":" + $0 } ?? "")
        environment["PYTHONUNBUFFERED"] = "1"
        if task.gang != nil { environment.merge(gangEnvironment(environment)) { old, _ in old } }
        process.environment = environment
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        // Held open while the trainer runs: if this worker dies (even SIGKILL), the trainer and,
        // under torchrun, its whole gang stop instead of training on for nobody.
        let stdin = Pipe()
        process.standardInput = stdin
        defer { try? stdin.fileHandleForWriting.close() }
        logger.info("personalisation started", metadata: [
            "budget_seconds": .stringConvertible(task.budgetSeconds), "attempt": .stringConvertible(task.attempt),
            "resume_step": .string(task.checkpointStep.map(String.init) ?? "none"),
            "dataset_bytes": .stringConvertible(task.dataset.reduce(0) { $0 + $1.bytes.count }),
            "rank": .string(task.gang.map { "\($0.rank) of \($0.size) at \($0.endpoint)" } ?? "alone"), "device": .string(device)])
        do { try process.run() } catch {
            throw DubfarmError(.configuration, "cannot start the trainer \(python): \(error.localizedDescription)")
        }

        // The trainer's stderr: kept (its last lines explain a failure) and logged at debug level.
        let errors = StderrTail()
        let errThread = Thread {
            Self.forEachLine(of: stderr.fileHandleForReading) { line in
                errors.add(line)
                logger.debug("trainer: \(line)")
            }
        }
        errThread.start()
        // Cancellation (and a trainer that overruns its budget by far) ends the process.
        let done = Synchronized(false)
        let watchdog = Thread {
            let limit = Date().addingTimeInterval(Double(task.budgetSeconds) * 2 + 600)
            var signalled = false
            while !done.value {
                if !signalled && (cancelled() || Date() > limit) {
                    signalled = true
                    process.terminate()
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
        watchdog.start()
        defer { done.value = true }

        var last = TrainProgress(step: task.checkpointStep ?? 0, loss: nil, elapsed: 0)
        var finished: (line: String, weights: String)?
        var failure: (reason: String, message: String)?
        func handle(_ line: String) {
            guard let event = try? JSONDecoder().decode(Event.self, from: Data(line.utf8)) else {
                logger.warning("trainer printed a line that is not its protocol: \(line.prefix(200))")
                return
            }
            last = TrainProgress(step: event.step ?? last.step, loss: event.loss ?? last.loss, elapsed: event.elapsed ?? last.elapsed)
            switch event.event {
            case "start", "progress":
                report(.trainProgress(task.ref, last))
            case "checkpoint":
                guard let path = event.path, let bytes = FileManager.default.contents(atPath: path) else {
                    logger.warning("trainer named a checkpoint it did not write: \(event.path ?? "no path")")
                    return
                }
                logger.info("checkpoint", metadata: ["step": .stringConvertible(last.step), "bytes": .stringConvertible(bytes.count)])
                report(.checkpoint(task.ref, last, bytes: [UInt8](bytes)))
            case "done":
                if let w = event.weights { finished = (line, w) }
            case "failed":
                failure = (event.reason ?? "", event.message ?? "no message")
            default:
                break
            }
        }
        Self.forEachLine(of: stdout.fileHandleForReading) { if !$0.isEmpty { handle($0) } }
        process.waitUntilExit()
        done.value = true
        while errThread.isExecuting { Thread.sleep(forTimeInterval: 0.01) }
        let status = process.terminationStatus
        if cancelled() { throw DubfarmError(.cancelled, "personalisation of job \(task.ref.job) stopped at step \(last.step)") }
        if member {
            guard status == 0 else {
                let why = errors.lastLines.isEmpty ? "no message" : errors.lastLines
                throw DubfarmError(.internalError, "the trainer (rank \(task.gang!.rank) of \(task.gang!.size)) exited with status \(status): \(why)")
            }
            return nil
        }
        if status != 0, let failure {
            // Under torchrun the exit status is torchrun's: the trainer's last line says why.
            throw DubfarmError(failure.reason == "unusable" ? .badInput : .internalError,
                               "the trainer stopped at step \(last.step): \(failure.message)")
        }
        guard status == 0, let finished else {
            let why = errors.lastLines.isEmpty ? "no message" : errors.lastLines
            throw DubfarmError(status == 2 ? .badInput : .internalError,
                               "the trainer exited with status \(status) at step \(last.step): \(why)")
        }
        guard let weights = FileManager.default.contents(atPath: finished.weights) else {
            throw DubfarmError(.internalError, "the trainer finished but its weights file \(finished.weights) is missing")
        }
        return Outcome(progress: last, report: finished.line, weights: [UInt8](weights))
    }
}

extension Personaliser {
    /// Calls `body` with each line read from `handle` until its end (blocking).
    static func forEachLine(of handle: FileHandle, _ body: (String) -> Void) {
        var pending = Data()
        while true {
            let chunk = handle.availableData
            if chunk.isEmpty { break }
            pending.append(chunk)
            while let nl = pending.firstIndex(of: 0x0A) {
                body(String(decoding: pending[pending.startIndex..<nl], as: UTF8.self))
                pending.removeSubrange(pending.startIndex...nl)
            }
        }
    }
}

/// The last few lines a child wrote to stderr.
final class StderrTail: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [String] = []
    func add(_ line: String) {
        lock.lock()
        defer { lock.unlock() }
        let t = line.trimmingCharacters(in: .whitespaces)
        guard !t.isEmpty else { return }
        lines.append(t)
        if lines.count > 3 { lines.removeFirst() }
    }
    var lastLines: String {
        lock.lock()
        defer { lock.unlock() }
        return lines.joined(separator: " | ")
    }
}

/// A value behind a lock.
final class Synchronized<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}
