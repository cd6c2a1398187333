import DubfarmCore
import FarmProtocol
import Foundation
import Testing
@testable import Worker

@Suite("Personaliser: the trainer's command line")
struct PersonaliserCommandTests {
    let personaliser = Personaliser(python: "/usr/bin/python3", trainerDirectory: URL(fileURLWithPath: "/srv/training"),
                                    baseModel: URL(fileURLWithPath: "/srv/models/small"), workDirectory: URL(fileURLWithPath: "/tmp"),
                                    threads: 2, device: "cpu", rendezvous: "10.0.0.1:29517")

    func task(gang: TrainGang?) -> TrainAssignment {
        TrainAssignment(ref: TrainRef(job: JobID(4), token: .random()), budgetSeconds: 120, checkpointSeconds: 30, attempt: 1,
                        dataset: [], gang: gang)
    }

    @Test("alone: the trainer module with the budget, device and resume; no torchrun")
    func alone() throws {
        let c = try personaliser.command(task(gang: nil), data: URL(fileURLWithPath: "/w/data"), out: URL(fileURLWithPath: "/w/out"),
                                         resume: URL(fileURLWithPath: "/w/resume.pt"))
        #expect(Array(c.prefix(2)) == ["-m", "dubtrain.personalise"])
        #expect(c.joined(separator: " ").contains("--seconds 120 --checkpoint-every 30 --threads 2 --device cpu --stop-on-stdin-eof --resume /w/resume.pt"))
    }

    @Test("in a gang: torchrun with this worker's rank, the gang's size and rank 0's rendezvous, then the same trainer arguments")
    func gang() throws {
        let c = try personaliser.command(task(gang: TrainGang(rank: 2, size: 3, endpoint: "[fd00::1]:29600")),
                                         data: URL(fileURLWithPath: "/w/data"), out: URL(fileURLWithPath: "/w/out"), resume: nil)
        #expect(Array(c.prefix(16)) == ["-m", "torch.distributed.run", "--nnodes", "3", "--node-rank", "2", "--nproc-per-node", "1",
                                        "--master-addr", "fd00::1", "--master-port", "29600", "--max-restarts", "0", "-m", "dubtrain.personalise"])
        #expect(!c.contains("--resume"))
    }

    @Test("it advertises personalise, its device unless the CPU, and its rendezvous")
    func capabilities() {
        #expect(personaliser.capabilities == ["personalise", "rendezvous:10.0.0.1:29517"])
        var gpu = personaliser
        gpu.device = "cuda"
        gpu.rendezvous = nil
        #expect(gpu.capabilities == ["personalise", "personalise-device:cuda"])
        let hello = WorkerHello(name: "g", host: "h", pid: 1, threads: 2, stage: "dub", capabilities: gpu.capabilities, version: "v")
        #expect(hello.canPersonalise && hello.personaliseDevice == "cuda" && hello.rendezvous == nil)
    }
}

@Suite("Rendezvous endpoint")
struct RendezvousTests {
    @Test("given HOST:PORT it is kept; HOST alone gets a free port; IPv6 is bracketed")
    func given() throws {
        #expect(try Rendezvous.endpoint("10.1.2.3:29500", coordinator: "tcp://x:5555") == "10.1.2.3:29500")
        let chosen = try Rendezvous.endpoint("node-7", coordinator: "tcp://x:5555")
        let port = try #require(Int(chosen.split(separator: ":").last!))
        #expect(chosen.hasPrefix("node-7:") && (1...65535).contains(port))
        #expect(try Rendezvous.endpoint("fd00::9", coordinator: "tcp://x:5555").hasPrefix("[fd00::9]:"))
        #expect(throws: DubfarmError.self) { try Rendezvous.endpoint("h:70000", coordinator: "tcp://x:5555") }
        #expect(throws: DubfarmError.self) { try Rendezvous.endpoint(":29500", coordinator: "tcp://x:5555") }
    }

    @Test("a gang's collectives bind to the interface holding the rendezvous address (loopback here); the environment's choice wins")
    func interface() throws {
        #expect(Rendezvous.interface(holding: "127.0.0.1") == "lo")
        #expect(Rendezvous.interface(holding: "192.0.2.77") == nil)
        let p = Personaliser(python: "/usr/bin/python3", trainerDirectory: URL(fileURLWithPath: "/t"), baseModel: URL(fileURLWithPath: "/m"),
                             workDirectory: URL(fileURLWithPath: "/tmp"), threads: 1, rendezvous: "127.0.0.1:29500")
        #expect(p.gangEnvironment([:]) == ["GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"])
        var env = ["GLOO_SOCKET_IFNAME": "eth9"]
        env.merge(p.gangEnvironment(env)) { old, _ in old }
        #expect(env["GLOO_SOCKET_IFNAME"] == "eth9")
    }

    @Test("by default: the address that reaches the coordinator (loopback for a local one) and a port the kernel has free")
    func byDefault() throws {
        let e = try Rendezvous.endpoint(nil, coordinator: "tcp://127.0.0.1:5555")
        #expect(e.hasPrefix("127.0.0.1:"))
        let port = try #require(Int(e.split(separator: ":").last!))
        // Free now: a listener can take it.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        #expect(bound == 0)
    }
}
