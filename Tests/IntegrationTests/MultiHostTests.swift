import DubfarmCore
import FarmProtocol
import Foundation
import MediaPipeline
import LocalFarm
import Testing

/// Linux network namespaces joined to this one by veth pairs: a private "machine" per worker,
/// each with its own address, whose link can be cut with `ip link set … down`.
///
/// The coordinator and PostgreSQL (the shared test cluster, on its unix socket) stay in this
/// namespace; each worker runs in its own namespace (`ip netns exec`) and reaches the
/// coordinator only over its veth pair, by TCP. Namespaces (and with them the veth pairs) are
/// deleted by ``destroy()``, which the test calls even when it fails.
final class NetworkLab: @unchecked Sendable {
    static let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Whether this process can create namespaces (root or CAP_NET_ADMIN, and `ip` installed).
    static let available: Bool = {
        guard let ip else { return false }
        let probe = "dfprobe\(getpid() % 100_000)"
        guard (try? ProcessControl.run(ip, ["netns", "add", probe], timeout: 20))?.status == 0 else { return false }
        _ = try? ProcessControl.run(ip, ["netns", "delete", probe], timeout: 20)
        return true
    }()

    struct Host {
        let namespace: String
        /// The veth end in this (the coordinator's) namespace: `ip link set HOSTLINK down` cuts it off.
        let hostLink: String
        /// The coordinator's address as this host sees it, and the host's own.
        let coordinatorAddress: String
        let address: String
    }

    let tag: String
    let subnet: Int
    private(set) var hosts: [Host] = []

    init() throws {
        tag = String(format: "%04x", UInt16.random(in: 0...0xffff))
        // A /16 of 10.0.0.0/8 no route of this machine uses: two parallel runs never clash.
        let routes = (try? ProcessControl.run(Self.ip!, ["-4", "route", "show"], timeout: 20).stdout) ?? ""
        subnet = (0..<50).lazy.map { _ in Int.random(in: 100...250) }.first { !routes.contains("10.\($0).") } ?? 251
    }

    @discardableResult
    func run(_ args: [String]) throws -> String {
        let r = try ProcessControl.run(Self.ip!, args, timeout: 30)
        guard r.status == 0 else {
            throw DubfarmError(.internalError, "ip \(args.joined(separator: " ")) failed (\(r.status)): \(r.stderr)")
        }
        return r.stdout
    }

    /// A new namespace `df<tag>-<name>` linked to this namespace; host number `n` (1…250).
    func addHost(_ name: String, number n: Int) throws -> Host {
        let ns = "df\(tag)-\(name)"
        let outer = "v\(tag)h\(n)", inner = "v\(tag)n\(n)"   // interface names stay under 16 bytes
        let host = Host(namespace: ns, hostLink: outer, coordinatorAddress: "10.\(subnet).\(n).1", address: "10.\(subnet).\(n).2")
        try run(["netns", "add", ns])
        hosts.append(host)
        try run(["link", "add", outer, "type", "veth", "peer", "name", inner])
        try run(["link", "set", inner, "netns", ns])
        try run(["addr", "add", "\(host.coordinatorAddress)/24", "dev", outer])
        try run(["link", "set", outer, "up"])
        try run(["-n", ns, "addr", "add", "\(host.address)/24", "dev", inner])
        try run(["-n", ns, "link", "set", inner, "up"])
        try run(["-n", ns, "link", "set", "lo", "up"])
        return host
    }

    /// Cuts `host` off: its link in this namespace goes down.
    func cut(_ host: Host) throws { try run(["link", "set", host.hostLink, "down"]) }

    /// Deletes every namespace (their veth pairs go with them). Safe to call twice.
    func destroy() {
        for h in hosts {
            _ = try? ProcessControl.run(Self.ip!, ["link", "delete", h.hostLink], timeout: 20)
            _ = try? ProcessControl.run(Self.ip!, ["netns", "delete", h.namespace], timeout: 20)
        }
        hosts = []
    }
}

extension TestFarm {
    /// Starts worker `name` inside `host`'s namespace, connecting over its veth pair.
    @discardableResult
    func startWorker(_ name: String, in host: NetworkLab.Host, stage: String, extra: [String] = []) throws -> Int32 {
        // `ip netns exec` enters the namespace and execs the worker: the pid is the worker's.
        let pid = try ProcessControl.spawnDetached(
            NetworkLab.ip!,
            ["netns", "exec", host.namespace, dubfarmExecutable, "worker", "--connect", "tcp://\(host.coordinatorAddress):\(workPort)",
             "--name", name, "--stage", stage, "--heartbeat", String(heartbeat), "--liveness", String(liveness),
             "--log-level", "debug"] + extra,
            log: log(name), environment: environment)
        workers[name] = pid
        return pid
    }
}

extension Integration {
    @Suite("Multi-host (network namespaces)", .serialized,
           .enabled(if: haveMedia, "needs ../shared/media"),
           .enabled(if: NetworkLab.available,
                    "needs to create network namespaces (ip netns add): run as root or with CAP_NET_ADMIN, with iproute2 installed"))
    struct MultiHostTests {
        @Test("coordinator + PostgreSQL here, two workers on their own addresses in two namespaces: a job runs across them; cutting one worker's link mid-segment, the job completes on the other")
        func jobAcrossNamespacesSurvivesCutLink() async throws {
            let lab = try NetworkLab()
            defer { lab.destroy() }
            // The work endpoint listens on every address, so the veth ends reach it; the CLI
            // side stays on loopback.
            let farm = try await TestFarm(settings: ["DUBFARM_SEGMENTS_SECONDS": "2"])
            defer { farm.shutdown() }
            farm.environment["DUBFARM_COORDINATOR_WORK_ENDPOINT"] = "tcp://*:\(farm.workPort)"
            try farm.startCoordinator()
            let h1 = try lab.addHost("w1", number: 1), h2 = try lab.addHost("w2", number: 2)
            #expect(h1.address != h2.address)
            try farm.startWorker("w1", in: h1, stage: "sleep", extra: ["--sleep-seconds", "1.5"])
            try farm.startWorker("w2", in: h2, stage: "sleep", extra: ["--sleep-seconds", "1.5"])
            try farm.waitForWorkers(2, "2 workers connected across namespaces", timeout: 60)
            // 1. End to end across both namespaces: speaker-a (variable frame rate, re-timed to
            //    its 6.07 s at 30 fps) in 2-second segments.
            let retimed = Int((try SourceIndexer.index(path: media("speaker-a.mp4")).info.timelineDuration * 30).rounded(.up))
            let first = try farm.submit(media("speaker-a.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            let d1 = try farm.wait(job: first, timeout: 300)
            #expect(d1.job.state == .done, "\(d1.job.error ?? "")\n\(farm.tail("coordinator", lines: 30))")
            #expect(d1.segments.count == (retimed + 59) / 60)
            #expect(Set(d1.segments.compactMap(\.worker)) == ["w1", "w2"], "both namespaces worked on the job")
            #expect(ffprobeCounts(farm.output(first))?.frames == retimed)

            // 2. Cut w1's link while it works on a segment of the second job.
            let second = try farm.submit(media("speaker-a.mp4"), audio: media("dub-1.wav"), stage: "sleep")
            var cutSegment = -1
            try farm.waitFor("w1 to work on a segment of job \(second)", timeout: 120) {
                guard let s = try farm.status(second).segments.first(where: { $0.state == .leased && $0.worker == "w1" }) else { return false }
                // Leased is not yet started: wait for the worker's own log line.
                guard farm.tail("w1", lines: 400).split(separator: "\n")
                    .contains(where: { $0.contains("segment started") && $0.contains("job=\(second)") && $0.contains("segment=\(s.index)") })
                else { return false }
                cutSegment = s.index
                return true
            }
            try lab.cut(h1)
            let d2 = try farm.wait(job: second, timeout: 300)
            #expect(d2.job.state == .done, "\(d2.job.error ?? "")\n\(farm.tail("coordinator", lines: 30))")
            let redone = try #require(d2.segments.first { $0.index == cutSegment })
            #expect(redone.worker == "w2", "the segment w1 was cut off from was redone by w2")
            #expect(redone.leases >= 2)
            #expect(ffprobeCounts(farm.output(second))?.frames == retimed)
            #expect(farm.tail("coordinator", lines: 400).contains("worker lost"), "the coordinator noticed the silence")
            let workers = try farm.client().call(.workers, as: [WorkerView].self)
            #expect(workers.map(\.name) == ["w2"], "w1 is no longer counted as connected")
        }
    }
}
