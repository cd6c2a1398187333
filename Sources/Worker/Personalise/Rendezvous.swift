import DubfarmCore
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Where a worker hosts a data-parallel fine-tune's rendezvous when it is rank 0 (`worker
/// --rendezvous HOST:PORT`): the other ranks' trainers connect there (`torchrun --master-addr
/// --master-port`). Unless told, the host is the address this machine uses to reach the
/// coordinator (the network the other workers share) and the port one the kernel has free.
package enum Rendezvous {
    /// `HOST:PORT` from `text` (`HOST` alone takes a free port); throws with what is wrong.
    package static func endpoint(_ text: String?, coordinator: String) throws -> String {
        var host: String?
        var port: Int?
        if let text, !text.isEmpty {
            // HOST, HOST:PORT, [V6] or [V6]:PORT; a bare IPv6 address (several colons) is a host.
            let bareIPv6 = !text.hasPrefix("[") && text.filter { $0 == ":" }.count > 1
            if !bareIPv6, let colon = text.lastIndex(of: ":"), !text.hasSuffix("]") {
                guard let p = Int(text[text.index(after: colon)...]), (1...65535).contains(p) else {
                    throw DubfarmError(.configuration, "--rendezvous '\(text)': the port is not 1…65535")
                }
                host = String(text[..<colon])
                port = p
            } else {
                host = text
            }
            if host!.hasPrefix("["), host!.hasSuffix("]") { host = String(host!.dropFirst().dropLast()) }
            if host!.isEmpty { throw DubfarmError(.configuration, "--rendezvous '\(text)' names no host (HOST or HOST:PORT)") }
        }
        guard let h = host ?? localAddress(towards: coordinator) else {
            throw DubfarmError(.configuration, "cannot tell which address of this machine reaches \(coordinator); pass --rendezvous HOST[:PORT] (an address the other workers reach)")
        }
        guard let p = port ?? freePort() else {
            throw DubfarmError(.configuration, "no free TCP port for the rendezvous; pass --rendezvous \(h):PORT")
        }
        return h.contains(":") && !h.hasPrefix("[") ? "[\(h)]:\(p)" : "\(h):\(p)"
    }

    /// The local address the kernel would use to reach the host of `endpoint` (`tcp://HOST:PORT`):
    /// a UDP socket "connected" there sends nothing but has its source address chosen.
    static func localAddress(towards endpoint: String) -> String? {
        var rest = Substring(endpoint)
        if let scheme = rest.range(of: "://") { rest = rest[scheme.upperBound...] }
        guard let colon = rest.lastIndex(of: ":") else { return nil }
        var host = String(rest[..<colon])
        let port = String(rest[rest.index(after: colon)...])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "*" || host.isEmpty { host = "127.0.0.1" }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, port, &hints, &list) == 0, let first = list else { return nil }
        defer { freeaddrinfo(list) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        guard connect(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0 else { return nil }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { return nil }
        return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { numericHost($0, length) } }
    }

    /// `address` as text (`10.0.0.5`, `fe80::1%eth0`), or nil.
    private static func numericHost(_ address: UnsafePointer<sockaddr>, _ length: socklen_t) -> String? {
        var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(address, length, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0 else { return nil }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The name of the network interface that holds `address` (numeric), e.g. `eth0` or `lo`;
    /// nil when none does. A gang's trainers bind there (`GLOO_SOCKET_IFNAME`): left to itself,
    /// gloo takes the address the host name resolves to, 127.0.1.1 on a stock Debian, which the
    /// other machines cannot reach.
    static func interface(holding address: String) -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var cursor = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let sa = entry.pointee.ifa_addr else { continue }
            let family = Int32(sa.pointee.sa_family)
            guard family == AF_INET || family == AF_INET6 else { continue }
            let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
            guard let numeric = numericHost(sa, length) else { continue }
            // IPv6 link-local addresses carry their scope (`fe80::1%eth0`).
            if numeric == address || numeric.split(separator: "%").first.map(String.init) == address {
                return String(cString: entry.pointee.ifa_name)
            }
        }
        return nil
    }

    /// A TCP port nothing listens on now (the kernel's pick for port 0).
    static func freePort() -> Int? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = INADDR_ANY
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
        }
        return bound ? Int(UInt16(bigEndian: address.sin_port)) : nil
    }
}
