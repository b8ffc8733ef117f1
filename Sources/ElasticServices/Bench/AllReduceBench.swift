import ElasticCore
import ElasticTransport
import ElasticWire
import Foundation
import Logging

/// The all-reduce benchmark: a ring all-reduce of a float buffer among `ranks` data planes in
/// this process (mutual TLS on loopback, the real code path), against a raw-TCP ring moving the
/// same bytes per link over plain loopback sockets, measured in the same run.
public enum AllReduceBench {
    public struct Result: Sendable {
        public let ranks: Int
        public let bytes: Int
        public let elastic: Duration
        public let rawTCP: Duration

        /// NCCL's bus bandwidth: bytes × 2(n−1)/n per second.
        public func busBandwidth(_ time: Duration) -> Double {
            Double(bytes) * 2 * Double(ranks - 1) / Double(ranks) / (Double(time.nanosecondsClamped) / 1e9)
        }

        public var report: String {
            let ours = busBandwidth(elastic)
            let raw = busBandwidth(rawTCP)
            return String(format: "all-reduce of %d MiB among %d ranks: elastic %.3f s (bus %.0f MB/s), raw TCP ring %.3f s (bus %.0f MB/s), ratio %.2f",
                          bytes >> 20, ranks, Double(elastic.nanosecondsClamped) / 1e9, ours / 1e6,
                          Double(rawTCP.nanosecondsClamped) / 1e9, raw / 1e6, ours / raw)
        }
    }

    public static func run(ranks: Int, bytes: Int, repeats: Int) async throws -> Result {
        precondition(ranks >= 2, "a ring needs two ranks")
        let elements = bytes / 4
        let perLink = elements / ranks * 4 * 2 * (ranks - 1)
        var best = Duration.seconds(1_000_000)
        var bestRaw = Duration.seconds(1_000_000)
        let (planes, addresses) = try await makePlanes(ranks: ranks)
        defer { Task { for plane in planes { await plane.stop() } } }
        for round in 0..<repeats {
            best = min(best, try await elasticRing(planes: planes, addresses: addresses, elements: elements, generation: Generation(UInt64(round + 1))))
            bestRaw = min(bestRaw, try rawTCPRing(ranks: ranks, bytesPerLink: perLink))
        }
        return Result(ranks: ranks, bytes: elements * 4, elastic: best, rawTCP: bestRaw)
    }

    private static func makePlanes(ranks: Int) async throws -> ([DataPlane], [NodeID: String]) {
        let authority = try CertificateAuthority.create(name: "bench CA")
        var planes: [DataPlane] = []
        var addresses: [NodeID: String] = [:]
        for rank in 0..<ranks {
            let node = NodeID("rank-\(rank)")
            let identity = try authority.issueIdentity(name: node.value, role: .node, lifetime: 3600)
            let plane = DataPlane(identity: identity, ca: authority.certificate, node: node, logger: Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() }))
            addresses[node] = try await plane.start(host: "127.0.0.1").description
            planes.append(plane)
        }
        return (planes, addresses)
    }

    private static func elasticRing(planes: [DataPlane], addresses: [NodeID: String], elements: Int, generation: Generation) async throws -> Duration {
        let ranks = planes.count
        try await withThrowingTaskGroup(of: Void.self) { group in
            for rank in 0..<ranks {
                let peers: Set<NodeID> = [NodeID("rank-\((rank + 1) % ranks)"), NodeID("rank-\((rank + ranks - 1) % ranks)")]
                group.addTask { try await planes[rank].configure(generation: generation, peers: peers, addresses: addresses) }
            }
            try await group.waitForAll()
        }
        let clock = ContinuousClock()
        let start = clock.now
        try await withThrowingTaskGroup(of: Void.self) { group in
            for rank in 0..<ranks {
                group.addTask {
                    var buffer = [Float](repeating: Float(rank), count: elements)
                    let link = DataPlaneRingLink(plane: planes[rank], next: NodeID("rank-\((rank + 1) % ranks)"), step: 0, generation: generation)
                    try await RingAllReduce.run(&buffer, rank: rank, size: ranks, link: link, chunkElements: 1 << 20)
                    let expected = Float(ranks * (ranks - 1) / 2)
                    guard buffer.first == expected, buffer.last == expected else {
                        throw DataPlaneError("the benchmark's all-reduce gave a wrong sum")
                    }
                }
            }
            try await group.waitForAll()
        }
        return clock.now - start
    }

    /// `ranks` loopback TCP connections in a ring; every rank sends `bytesPerLink` to the next
    /// while receiving as much from the previous, with one thread per direction.
    static func rawTCPRing(ranks: Int, bytesPerLink: Int) throws -> Duration {
        var listeners: [Int32] = []
        var ports: [UInt16] = []
        for _ in 0..<ranks {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
            _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
            listen(fd, 4)
            listeners.append(fd)
            ports.append(UInt16(bigEndian: address.sin_port))
        }
        // Rank r sends to rank r+1: it connects to listener r+1.
        var senders: [Int32] = []
        for rank in 0..<ranks {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            address.sin_port = ports[(rank + 1) % ranks].bigEndian
            let result = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard result == 0 else { throw DataPlaneError("raw TCP baseline: connect failed: \(String(cString: strerror(errno)))") }
            senders.append(fd)
        }
        let receivers = listeners.map { accept($0, nil, nil) }
        defer { (listeners + senders + receivers).forEach { close($0) } }
        let chunk = 1 << 20
        let clock = ContinuousClock()
        let start = clock.now
        // One thread per direction: a blocked sender must never keep a receiver from running.
        let group = DispatchGroup()
        func spawn(_ body: @escaping @Sendable () -> Void) {
            group.enter()
            Thread { body(); group.leave() }.start()
        }
        for rank in 0..<ranks {
            let sender = senders[rank]
            let receiver = receivers[rank]
            spawn {
                let buffer = [UInt8](repeating: 7, count: chunk)
                var left = bytesPerLink
                while left > 0 {
                    let sent = buffer.withUnsafeBytes { send(sender, $0.baseAddress, min(chunk, left), 0) }
                    if sent <= 0 { return }
                    left -= sent
                }
            }
            spawn {
                var buffer = [UInt8](repeating: 0, count: chunk)
                var left = bytesPerLink
                while left > 0 {
                    let got = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, min(chunk, left), 0) }
                    if got <= 0 { return }
                    left -= got
                }
            }
        }
        group.wait()
        return clock.now - start
    }
}
