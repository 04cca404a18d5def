# Protocol-kind and address-family codes shared by the kernels: the C view of
# lego.ext.batch.Proto and lego.ext.batch.Family (change both together).

cdef enum:
    P_L2 = 0
    P_ARP = 1
    P_ICMP = 2
    P_TCP = 3
    P_UDP = 4
    P_IP = 5

cdef enum:
    F_NONE = 0
    F_MAC = 1
    F_V4 = 4
    F_V6 = 6
