import ElasticCore
import ElasticWire
import Testing

/// Malformed payloads: each is refused with the right code, never a trap.
@Suite("ControlMessage rejections")
struct MessageRejectionTests {
    @Test(arguments: Samples.all)
    func everyTruncationOfAPayloadIsRefusedAsTruncated(message: ControlMessage) {
        let full = message.frame(generation: 3)
        for length in 0..<full.payload.count {
            let cut = Frame(kind: full.kind, generation: full.generation, payload: Array(full.payload[..<length]))
            expectWireError(.truncated, "\(message.kind) cut to \(length) of \(full.payload.count)") { () throws(WireError) in
                try ControlMessage(frame: cut)
            }
        }
    }

    @Test(arguments: Samples.all)
    func trailingBytesAfterAPayloadAreRefused(message: ControlMessage) {
        let full = message.frame(generation: 3)
        for extra in [[0], [1, 2, 3], [UInt8](repeating: 0xFF, count: 64)] as [[UInt8]] {
            let longer = Frame(kind: full.kind, generation: full.generation, payload: full.payload + extra)
            expectWireError(.trailingBytes, "\(message.kind) + \(extra.count)") { () throws(WireError) in try ControlMessage(frame: longer) }
        }
    }

    @Test func invalidUTF8IsRefused() {
        let invalid: [[UInt8]] = [
            [0xFF],                 // never valid
            [0xC0, 0x80],           // overlong NUL
            [0xED, 0xA0, 0x80],     // a UTF-16 surrogate
            [0xE2, 0x82],           // a sequence cut short
            [0x61, 0x80, 0x62],     // a stray continuation byte
            [0xF4, 0x90, 0x80, 0x80],  // beyond U+10FFFF
        ]
        for bytes in invalid {
            let done = frame(.done, payload { $0.write(bytes: bytes) })
            expectWireError(.invalidValue, "\(bytes)") { () throws(WireError) in try ControlMessage(frame: done) }
            let view = frame(.view, payload {
                $0.write(count: 1)
                $0.write("w1")
                $0.write(UInt64(1))
                $0.write(bytes: bytes)
            })
            expectWireError(.invalidValue, "address \(bytes)") { () throws(WireError) in try ControlMessage(frame: view) }
            let hello = frame(.hello, payload {
                $0.write(false)
                Samples.capacity.encode(to: &$0)
                $0.write(bytes: bytes)
            })
            expectWireError(.invalidValue, "version \(bytes)") { () throws(WireError) in try ControlMessage(frame: hello) }
        }
    }

    @Test func aListCountTheRemainingBytesCannotHoldIsRefused() {
        // Token list items are at least 22 bytes; view entries 16; member statuses 60.
        let tokenList = frame(.tokenList, payload {
            $0.write(count: 2)
            TokenInfo(id: "abc123", createdAt: 1, expiresAt: nil, usesLeft: nil, uses: 0, description: "").encode(to: &$0)
        })
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: tokenList) }
        for count in [1, 1_000, Int(UInt32.max)] {
            let view = frame(.view, payload { $0.write(count: count); $0.write(UInt64(0)) })
            expectWireError(.truncated, "view of \(count)") { () throws(WireError) in try ControlMessage(frame: view) }
        }
        let status = frame(.statusReply, payload {
            $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(0)); $0.write(UInt64(0))
            $0.write(count: 3)  // needs at least 180 bytes; 154 follow
            $0.write(bytes: [UInt8](repeating: 0, count: 150))
        })
        expectWireError(.truncated) { () throws(WireError) in try ControlMessage(frame: status) }
    }

    @Test func anInvalidBooleanIsRefused() {
        for flag: UInt8 in [2, 0x80, 0xFF] {
            let hello = frame(.hello, [flag] + [UInt8](repeating: 0, count: 8) + payload {
                Samples.capacity.encode(to: &$0)
                $0.write("v")
            })
            expectWireError(.invalidValue, "flag \(flag)") { () throws(WireError) in try ControlMessage(frame: hello) }
            let created = frame(.tokenCreated, payload { $0.write("t") } + [flag] + [UInt8](repeating: 0, count: 8))
            expectWireError(.invalidValue, "flag \(flag)") { () throws(WireError) in try ControlMessage(frame: created) }
        }
    }

    @Test func anUnknownRefusalCodeIsRefused() throws {
        for code: UInt16 in [0, 12, 0x100, .max] {
            let refused = frame(.refused, payload { $0.write(code); $0.write("why") })
            let error = expectWireError(.invalidValue, "code \(code)") { () throws(WireError) in try ControlMessage(frame: refused) }
            #expect(error?.message.contains("\(code)") == true)
        }
        for code in Refused.Code.allCases {
            let refused = frame(.refused, payload { $0.write(code.rawValue); $0.write("why") })
            #expect(try ControlMessage(frame: refused) == .refused(Refused(code, "why")))
        }
    }

    @Test func anUnknownMemberStateIsRefused() throws {
        func status(state: String) -> Frame {
            frame(.statusReply, payload {
                $0.write(UInt64(1)); $0.write(UInt64(0)); $0.write(UInt64(500)); $0.write(UInt64(2_000))
                $0.write(count: 1)
                $0.write("w1")
                $0.write(UInt64(1))
                $0.write("10.0.0.1:7070")
                $0.write(state)
                $0.write(UInt64(1))
                $0.write(UInt64(10))
                Samples.capacity.encode(to: &$0)
                $0.write("")
            })
        }
        for state in ["zombie", "", "ALIVE", "alive ", "dea"] {
            let error = expectWireError(.invalidValue, "state \(state)") { () throws(WireError) in try ControlMessage(frame: status(state: state)) }
            #expect(error?.message.contains("'\(state)'") == true)
        }
        for state in Membership.State.allCases {
            guard case .statusReply(let reply) = try ControlMessage(frame: status(state: state.rawValue)) else {
                Issue.record("not a status reply")
                continue
            }
            #expect(reply.members.map(\.state) == [state])
        }
    }

    @Test func fieldsOverTheirLimitAreRefused() {
        let cases: [(String, Frame)] = [
            ("token id", frame(.tokenRevoke, payload { $0.write(String(repeating: "a", count: 65)) })),
            ("software version", frame(.hello, payload { $0.write(false); Samples.capacity.encode(to: &$0); $0.write(String(repeating: "v", count: 129)) })),
            ("node", frame(.welcome, payload { $0.write(String(repeating: "n", count: 65)); $0.write(UInt64(1)); $0.write(UInt32(500)); $0.write(UInt32(2_000)) })),
            ("certificate", frame(.caBundle, payload { $0.write(bytes: [UInt8](repeating: 0, count: (64 << 10) + 1)) })),
            ("csr", frame(.bootstrapRequest, payload { $0.write("t"); $0.write("n"); $0.write(bytes: [UInt8](repeating: 0, count: (16 << 10) + 1)) })),
            ("done message", frame(.done, payload { $0.write(String(repeating: "m", count: 4097)) })),
            // A length field claiming more than the limit is refused before the bytes are needed.
            ("claimed certificate", frame(.caBundle, payload { $0.write(UInt32.max) })),
        ]
        for (what, bad) in cases {
            expectWireError(.invalidValue, "\(what)") { () throws(WireError) in try ControlMessage(frame: bad) }
        }
    }

    @Test func impossibleValuesAreRefused() {
        let zeroHeartbeat = frame(.welcome, payload { $0.write("w"); $0.write(UInt64(1)); $0.write(UInt32(0)); $0.write(UInt32(2_000)) })
        expectWireError(.invalidValue) { () throws(WireError) in try ControlMessage(frame: zeroHeartbeat) }
        for gflops in [Double.nan, .infinity, -.infinity, -1, -.leastNonzeroMagnitude] {
            let hello = frame(.hello, payload { $0.write(false); $0.write(UInt32(1)); $0.write(UInt64(1)); $0.write(gflops); $0.write("v") })
            expectWireError(.invalidValue, "gflops \(gflops)") { () throws(WireError) in try ControlMessage(frame: hello) }
        }
    }

    @Test func messagesWithoutFieldsRefuseAnyPayload() {
        for kind in [ControlMessage.Kind.heartbeatAck, .caRequest, .statusRequest, .tokenListRequest] {
            #expect(throws: Never.self) { try ControlMessage(frame: frame(kind, [])) }
            expectWireError(.trailingBytes, "\(kind)") { () throws(WireError) in try ControlMessage(frame: frame(kind, [0])) }
        }
    }
}
