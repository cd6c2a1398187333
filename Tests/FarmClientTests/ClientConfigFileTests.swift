import DubfarmCore
import Foundation
import Testing
@testable import FarmClient

@Suite("Client configuration file")
struct ClientConfigFileTests {
    @Test("every key is read; relative paths are relative to the file")
    func allKeys() throws {
        let c = try ClientConfigFile.parse(yaml: """
            coordinator: tcp://farm.example:5555
            key_file: keys/me.key_secret
            server_key: ../keys/coordinator.key
            timeout: 12.5
            reconnect_seconds: 120
            """, path: "/etc/dubfarm/client.yml")
        #expect(c == ClientConfigFile(coordinator: "tcp://farm.example:5555", keyFile: "/etc/dubfarm/keys/me.key_secret",
                                      serverKey: "/etc/dubfarm/../keys/coordinator.key", timeout: 12.5, reconnectSeconds: 120))
    }

    @Test("absolute and ~ paths are kept; a key is kept as given")
    func paths() throws {
        let key = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
        let c = try ClientConfigFile.parse(yaml: "key_file: ~/k.key_secret\nserver_key: '\(key)'\n", path: "conf/client.yml")
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "~"
        #expect(c.keyFile == ClientPath.clean(home + "/k.key_secret"))
        #expect(c.serverKey == key)
        #expect(try ClientConfigFile.parse(yaml: "key_file: /k/me.key_secret\nserver_key: coordinator.key\n", path: "conf/client.yml")
                == ClientConfigFile(keyFile: "/k/me.key_secret", serverKey: "conf/coordinator.key"))
    }

    @Test("reconnect_seconds may be 0: give up at once")
    func reconnectZero() throws {
        #expect(try ClientConfigFile.parse(yaml: "reconnect_seconds: 0\n", path: "c.yml").reconnectSeconds == 0)
    }

    @Test("an empty file sets nothing", arguments: ["", "# nothing yet\n", "coordinator:\n"])
    func empty(text: String) throws {
        #expect(try ClientConfigFile.parse(yaml: text, path: "c.yml") == ClientConfigFile())
    }

    @Test("an unknown key is named with the file and the known keys")
    func unknownKey() {
        let m = errorMessage { _ = try ClientConfigFile.parse(yaml: "coordinater: tcp://x:1\n", path: "/home/u/.config/dubfarm/client.yml") }
        #expect(m.contains("'coordinater'") && m.contains("/home/u/.config/dubfarm/client.yml"))
        #expect(m.contains("coordinator, key_file, server_key, timeout, reconnect_seconds"))
    }

    @Test("a value of the wrong type names its key", arguments: [
        ("timeout: soon\n", "timeout"), ("timeout: 0\n", "timeout"), ("reconnect_seconds: -5\n", "reconnect_seconds"), ("timeout: .nan\n", "timeout"),
        ("coordinator: [a, b]\n", "coordinator"), ("key_file: {a: b}\n", "key_file"), ("coordinator: true\n", "coordinator"),
        ("- a\n", "top level"), ("timeout: [1\n", "not valid YAML"),
    ])
    func wrongType(yaml: String, mentions: String) throws {
        do {
            _ = try ClientConfigFile.parse(yaml: yaml, path: "c.yml")
            Issue.record("accepted: \(yaml)")
        } catch let e as DubfarmError {
            #expect(e.code == .configuration)
            #expect(e.message.contains(mentions), "\(e.message)")
            #expect(e.message.contains("c.yml"))
        }
    }

    @Test("the default path: DUBFARM_CLIENT_CONFIG, then XDG_CONFIG_HOME, then HOME")
    func defaultPath() {
        let all = ["DUBFARM_CLIENT_CONFIG": "/srv/client.yml", "XDG_CONFIG_HOME": "/x", "HOME": "/home/u"]
        #expect(ClientConfigFile.defaultPath(environment: all) == "/srv/client.yml")
        #expect(ClientConfigFile.defaultPath(environment: all.merging(["DUBFARM_CLIENT_CONFIG": "none"]) { $1 }) == nil)
        #expect(ClientConfigFile.defaultPath(environment: all.merging(["DUBFARM_CLIENT_CONFIG": ""]) { $1 }) == "/x/dubfarm/client.yml")
        #expect(ClientConfigFile.defaultPath(environment: ["XDG_CONFIG_HOME": "/x/", "HOME": "/home/u"]) == "/x/dubfarm/client.yml")
        #expect(ClientConfigFile.defaultPath(environment: ["XDG_CONFIG_HOME": "", "HOME": "/home/u"]) == "/home/u/.config/dubfarm/client.yml")
        #expect(ClientConfigFile.defaultPath(environment: ["HOME": "/home/u"]) == "/home/u/.config/dubfarm/client.yml")
        #expect(ClientConfigFile.defaultPath(environment: [:]) == nil)
    }

    @Test("load: nil without a file; errors name the file")
    func load() throws {
        let dir = try ScratchDirectory(files: [])
        #expect(try ClientConfigFile.load(path: dir.path + "/client.yml") == nil)
        let good = try dir.write("client.yml", "coordinator: tcp://h:5555\nkey_file: me.key_secret\n")
        #expect(try ClientConfigFile.load(path: good) == ClientConfigFile(coordinator: "tcp://h:5555", keyFile: dir.path + "/me.key_secret"))
        let bad = try dir.write("bad.yml", "timeout: never\n")
        #expect(errorMessage { _ = try ClientConfigFile.load(path: bad) }.contains(bad))
        #expect(errorMessage { _ = try ClientConfigFile.load(path: dir.path) }.contains(dir.path))
    }
}
