import DubfarmCore
import Foundation
import Glibc
import Testing
@testable import FarmSecurity
@testable import ZeroMQ

func tempDir() throws -> String {
    let d = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-keys-\(UUID().uuidString.prefix(8))").path
    try FileManager.default.createDirectory(atPath: d, withIntermediateDirectories: true)
    return d
}

func mode(_ path: String) -> mode_t {
    var st = stat()
    _ = stat(path, &st)
    return st.st_mode & 0o777
}

@Suite("Access policy (ZAP allow-lists)")
struct AccessPolicyTests {
    let worker = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    let client = "Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID"
    var policy: AccessPolicy { AccessPolicy(workers: [worker], clients: [client]) }

    @Test("a worker key is admitted on the work endpoint only; a client key on the control endpoint only")
    func roles() {
        #expect(policy.decide(domain: AccessPolicy.workDomain, mechanism: "CURVE", publicKey: worker).allowed)
        #expect(policy.decide(domain: AccessPolicy.controlDomain, mechanism: "CURVE", publicKey: client).allowed)
        let crossed = policy.decide(domain: AccessPolicy.controlDomain, mechanism: "CURVE", publicKey: worker)
        #expect(!crossed.allowed)
        #expect(crossed.reason.contains("not in the authorized clients"))
        #expect(!policy.decide(domain: AccessPolicy.workDomain, mechanism: "CURVE", publicKey: client).allowed)
    }

    @Test("unknown keys, other mechanisms, missing keys and unknown domains are refused with a reason", arguments: [
        (AccessPolicy.workDomain, "CURVE", "x" + String(repeating: "0", count: 39), "not in the authorized workers"),
        (AccessPolicy.workDomain, "NULL", nil, "CURVE is required"),
        (AccessPolicy.controlDomain, "PLAIN", nil, "CURVE is required"),
        (AccessPolicy.workDomain, "CURVE", nil, "no CURVE public key"),
        ("", "CURVE", "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7", "unknown ZAP domain"),
    ] as [(String, String, String?, String)])
    func refused(domain: String, mechanism: String, key: String?, reason: String) {
        let d = policy.decide(domain: domain, mechanism: mechanism, publicKey: key)
        #expect(!d.allowed)
        #expect(d.reason.contains(reason), "\(d.reason)")
    }

    @Test("an empty allow-list admits nobody")
    func emptyList() {
        #expect(!AccessPolicy(workers: [], clients: []).decide(domain: AccessPolicy.workDomain, mechanism: "CURVE", publicKey: worker).allowed)
    }

    @Test("only a key prefix is logged")
    func prefix() { #expect(AccessPolicy.prefix(worker) == "rq:rM>}U…") }
}

@Suite("CURVE key files")
struct KeyFileTests {
    @Test("generate writes NAME.key (0644) and NAME.key_secret (0600) that load back; it never overwrites")
    func writeAndLoad() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let pair = try CurveKeyPair.generate()
        let files = try KeyFiles.write(pair, name: "w1", directory: dir)
        #expect(mode(files.publicFile) == 0o644)
        #expect(mode(files.secretFile) == 0o600)
        #expect(!KeyFiles.isExposed(files.secretFile))
        #expect(try KeyFiles.loadKeyPair(files.secretFile) == pair)
        #expect(try KeyFiles.resolveServerKey(files.publicFile) == pair.publicKey)
        #expect(try KeyFiles.resolveServerKey(pair.publicKey) == pair.publicKey)
        let publicText = try String(contentsOfFile: files.publicFile, encoding: .utf8)
        #expect(!publicText.contains(pair.secretKey))
        #expect(throws: DubfarmError.self) { try KeyFiles.write(pair, name: "w1", directory: dir) }
        #expect(throws: DubfarmError.self) { try KeyFiles.write(pair, name: "../w2", directory: dir) }
    }

    @Test("a secret key file is exposed when others can read it, or a group that is not the process's own")
    func exposure() {
        #expect(!KeyFiles.isExposed(mode: 0o600, group: 0, processGroup: 10001))
        #expect(!KeyFiles.isExposed(mode: 0o400, group: 0, processGroup: 10001))
        // Kubernetes fsGroup: root:10001, 0440, read by a process of group 10001.
        #expect(!KeyFiles.isExposed(mode: 0o440, group: 10001, processGroup: 10001))
        #expect(KeyFiles.isExposed(mode: 0o440, group: 100, processGroup: 10001))
        #expect(KeyFiles.isExposed(mode: 0o604, group: 10001, processGroup: 10001))
        #expect(KeyFiles.isExposed(mode: 0o644, group: 0, processGroup: 0))
    }

    @Test("an allow-list directory holds every public key in it and skips secret files")
    func allowListDirectory() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let a = try CurveKeyPair.generate(), b = try CurveKeyPair.generate(), c = try CurveKeyPair.generate()
        try KeyFiles.write(a, name: "a", directory: dir)
        try KeyFiles.write(b, name: "b", directory: dir)
        try (c.publicKey + "\n").write(toFile: dir + "/bare.txt", atomically: true, encoding: .utf8)
        #expect(try KeyFiles.loadAuthorizedKeys(dir) == [a.publicKey, b.publicKey, c.publicKey])
        #expect(try KeyFiles.loadAuthorizedKeys(dir + "/a.key") == [a.publicKey])
    }

    @Test("bad key files are refused naming the file and the reason", arguments: [
        ("missing", nil, "does not exist"),
        ("empty", "", "no CURVE key found"),
        ("garbage", "hello world\n", "no CURVE key found"),
        ("short", "curve\n    secret-key = \"abc\"\n", "not a 40-character Z85 CURVE key"),
        ("public only", "curve\n    public-key = \"rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7\"\n", "holds no secret-key"),
        ("mismatched", "curve\n    public-key = \"Yne@$w-vo<fVvi]a<NY6T1ed:M$fCG*[IaLV{hID\"\n    secret-key = \"JTKVSB%%)wK0E.X)V>+}o?pNmC{O&4W4b!Ni{Lh6\"\n",
         "does not belong to the secret-key"),
    ] as [(String, String?, String)])
    func badKeyFile(name: String, text: String?, reason: String) throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/\(name.replacingOccurrences(of: " ", with: "-")).key_secret"
        if let text { try text.write(toFile: path, atomically: true, encoding: .utf8) }
        do {
            _ = try KeyFiles.loadKeyPair(path)
            Issue.record("\(name) was accepted")
        } catch let e as DubfarmError {
            #expect(e.message.contains(path), "\(e.message)")
            #expect(e.message.contains(reason), "\(e.message)")
        }
    }

    @Test("a missing allow-list is named")
    func missingAllowList() {
        #expect { try KeyFiles.loadAuthorizedKeys("/nonexistent/workers") } throws: { e in
            (e as? DubfarmError)?.message.contains("/nonexistent/workers") == true
        }
    }

    @Test("Z85 round trip and rejection of non-Z85 text")
    func z85() throws {
        let pair = try CurveKeyPair.generate()
        let raw = try #require(Z85.decode(pair.publicKey))
        #expect(raw.count == 32)
        #expect(Z85.encode(raw) == pair.publicKey)
        #expect(Z85.decode("abc") == nil)
        #expect(Z85.decode(String(repeating: "\"", count: 40)) == nil)
        #expect(!KeyFiles.isValidKey(String(repeating: "~", count: 40)))
    }
}

@Suite("ZAP handler and socket limits (real libzmq sockets)", .serialized)
struct ZAPSocketTests {
    @Test("ZAP replies follow RFC 27: 200 with the user id, 400 with the reason, 500 for malformed requests")
    func answers() throws {
        let pair = try CurveKeyPair.generate()
        let raw = try #require(Z85.decode(pair.publicKey))
        let request: [[UInt8]] = [Array("1.0".utf8), Array("7".utf8), Array("dom".utf8), Array("10.0.0.9".utf8), [], Array("CURVE".utf8), raw]
        var seen: ZAPRequest?
        let ok = ZAPHandler.answer(request) { r in seen = r; return .allow(userID: "worker") }
        #expect(ok.count == 6)
        #expect(ok[1] == Array("7".utf8))
        #expect(String(decoding: ok[2], as: UTF8.self) == "200")
        #expect(String(decoding: ok[4], as: UTF8.self) == "worker")
        #expect(seen == ZAPRequest(domain: "dom", address: "10.0.0.9", mechanism: "CURVE", curvePublicKey: pair.publicKey))
        let no = ZAPHandler.answer(request) { _ in .deny("not listed") }
        #expect(String(decoding: no[2], as: UTF8.self) == "400")
        #expect(String(decoding: no[3], as: UTF8.self) == "not listed")
        #expect(String(decoding: ZAPHandler.answer([Array("2.0".utf8)]) { _ in .allow() }[2], as: UTF8.self) == "500")
        var shortKey = request
        shortKey[6] = [1, 2, 3]
        #expect(String(decoding: ZAPHandler.answer(shortKey) { _ in .allow() }[2], as: UTF8.self) == "500")
    }

    /// A CURVE ROUTER guarded by a ZAP handler that admits `allowed`, in a context of its own.
    func server(_ context: ZMQContext, allowed: Set<String>) throws -> (ZMQSocket, ZAPHandler, CurveKeyPair, String) {
        let keys = try CurveKeyPair.generate()
        let policy = AccessPolicy(workers: allowed, clients: [])
        let zap = ZAPHandler { r in
            let d = policy.decide(domain: r.domain, mechanism: r.mechanism, publicKey: r.curvePublicKey)
            return d.allowed ? .allow(userID: d.role) : .deny(d.reason)
        }
        try zap.start(context: context)
        let router = try ZMQSocket(.router, context: context)
        try router.setZAPDomain(AccessPolicy.workDomain)
        try router.setCurveServer(secretKey: keys.secretKey)
        try router.bind("tcp://127.0.0.1:*")
        return (router, zap, keys, router.lastEndpoint)
    }

    func receive(_ s: ZMQSocket, within seconds: Double) throws -> [[UInt8]]? {
        var poller = ZMQPoller([.socket(s)])
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            _ = try poller.poll(timeoutMilliseconds: 100)
            if let m = try s.receive() { return m }
        }
        return nil
    }

    func event(_ m: ZMQSocketMonitor, within seconds: Double, where match: (ZMQSocketEvent) -> Bool) throws -> ZMQSocketEvent? {
        var poller = ZMQPoller([.socket(m.socket)])
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            _ = try poller.poll(timeoutMilliseconds: 100)
            while let e = try m.next() { if match(e) { return e } }
        }
        return nil
    }

    @Test("CURVE with ZAP: an allowed key gets through; an unknown key and a plaintext peer are refused before any message")
    func curveAndZAP() throws {
        let context = ZMQContext()
        let good = try CurveKeyPair.generate(), bad = try CurveKeyPair.generate()
        let (router, zap, serverKeys, endpoint) = try server(context, allowed: [good.publicKey])
        defer { zap.stop() }
        func dealer(_ keys: CurveKeyPair?) throws -> (ZMQSocket, ZMQSocketMonitor) {
            let d = try ZMQSocket(.dealer, context: context)
            if let keys { try d.setCurveClient(serverKey: serverKeys.publicKey, publicKey: keys.publicKey, secretKey: keys.secretKey) }
            let m = try ZMQSocketMonitor(d)
            try d.connect(endpoint)
            return (d, m)
        }
        let (intruder, intruderEvents) = try dealer(bad)
        let (plain, plainEvents) = try dealer(nil)
        let (friend, friendEvents) = try dealer(good)
        try intruder.send([Array("intruder".utf8)])
        try plain.send([Array("plain".utf8)])
        try friend.send([Array("friend".utf8)], wait: true)
        // The refused peers learn why, from libzmq's handshake events (60 s: a loaded CI machine).
        let refusal = try event(intruderEvents, within: 60) { $0.isAuthenticationFailure }
        #expect(refusal?.value == 400)
        #expect(try event(plainEvents, within: 60) { $0.isProtocolFailure } != nil)
        // Only the friend's message arrives.
        let got = try receive(router, within: 60)
        var seen: [ZMQSocketEvent] = []
        while let e = try friendEvents.next() { seen.append(e) }
        try #require(got != nil, "friend's events: \(seen)")
        #expect(got?.last == Array("friend".utf8))
        #expect(try receive(router, within: 1) == nil)
    }

    @Test("ZMQ_MAXMSGSIZE: a message above the limit is refused by libzmq (the peer is dropped) and never delivered")
    func maxMessageSize() throws {
        let context = ZMQContext()
        let router = try ZMQSocket(.router, context: context)
        try router.setMaxMessageSize(64 << 10)
        try router.bind("tcp://127.0.0.1:*")
        let big = try ZMQSocket(.dealer, context: context)
        try big.connect(router.lastEndpoint)
        try big.send([Array(repeating: 1, count: 1 << 20)], wait: true)
        let small = try ZMQSocket(.dealer, context: context)
        try small.connect(router.lastEndpoint)
        try small.send([Array("small".utf8)], wait: true)
        let got = try #require(try receive(router, within: 60))
        #expect(got.last == Array("small".utf8))
        #expect(try receive(router, within: 1) == nil, "the oversized message must not be delivered")
    }
}
