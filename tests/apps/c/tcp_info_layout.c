/* Prints "field offset size" for the struct tcp_info fields the stack fills, from the
 * system's <linux/tcp.h>: tests/unit/test_tcpinfo.py checks the stack's packing
 * (anp_async/transport/tcpinfo.py) against it. */
#include <linux/tcp.h>
#include <stddef.h>
#include <stdio.h>

#define FIELD(f) printf("%s %zu %zu\n", #f, offsetof(struct tcp_info, tcpi_##f), \
                        sizeof(((struct tcp_info *)0)->tcpi_##f))

int main(void)
{
    printf("size %zu 0\n", sizeof(struct tcp_info));
    FIELD(state); FIELD(ca_state); FIELD(retransmits); FIELD(probes); FIELD(backoff);
    FIELD(options); FIELD(rto); FIELD(ato); FIELD(snd_mss); FIELD(rcv_mss);
    FIELD(unacked); FIELD(sacked); FIELD(last_data_recv); FIELD(last_ack_recv);
    FIELD(pmtu); FIELD(rcv_ssthresh); FIELD(rtt); FIELD(rttvar); FIELD(snd_ssthresh);
    FIELD(snd_cwnd); FIELD(advmss); FIELD(reordering); FIELD(rcv_space);
    FIELD(total_retrans); FIELD(max_pacing_rate); FIELD(bytes_acked);
    FIELD(bytes_received); FIELD(segs_out); FIELD(segs_in); FIELD(notsent_bytes);
    FIELD(min_rtt); FIELD(delivered); FIELD(bytes_sent); FIELD(bytes_retrans);
    FIELD(dsack_dups); FIELD(rcv_ooopack); FIELD(snd_wnd);
    return 0;
}
