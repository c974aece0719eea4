$ORIGIN example.com.
@ 3600 IN SOA ns1.example.com. hostmaster.example.com. 2024051701 3600 600 1209600 300
@ 3600 IN NS ns1
@ 3600 IN NS ns2
@ 3600 IN NS ns3
@ 3600 IN A 192.0.2.10
@ 3600 IN AAAA 2001:db8::10
@ 3600 IN MX 10 mx1
@ 3600 IN MX 20 mx2
@ 3600 IN TXT "v=spf1 mx -all"
@ 3600 IN CAA 0 issue "letsencrypt.org"
@ 3600 IN CAA 0 iodef "mailto:security@example.com"
_dmarc 3600 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"
_sip._tcp 3600 IN SRV 10 60 5060 sip
_sip._udp 3600 IN SRV 10 60 5060 sip
api 300 IN A 192.0.2.30
api 300 IN AAAA 2001:db8::30
eng 3600 IN NS ns1.eng
eng 3600 IN NS ns2.eng
ns1.eng 3600 IN A 192.0.2.53
ns2.eng 3600 IN A 198.51.100.53
ns2.eng 3600 IN AAAA 2001:db8:1::53
mx1 3600 IN A 192.0.2.25
mx2 3600 IN A 198.51.100.25
ns1 3600 IN A 10.0.1.10
ns2 3600 IN A 10.0.2.20
ns3 3600 IN A 10.0.3.20
sip 3600 IN A 192.0.2.40
www 3600 IN CNAME @
