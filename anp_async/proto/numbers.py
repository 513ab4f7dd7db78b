"""Protocol numbers, defined once: IP protocol numbers (IANA "Assigned Internet Protocol
Numbers", RFC 790) and EtherTypes (IEEE 802 numbers, as Linux's ``ETH_P_*``)."""

from __future__ import annotations

# IPv4 Protocol field (RFC 791).
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17

# Ethernet type field.
ETH_P_IP = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD
