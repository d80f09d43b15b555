//! Bounds-checked access to the headers of an XDP frame.
use aya_ebpf::programs::XdpContext;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const IP_MF: u16 = 0x2000;
pub const IP_OFFSET: u16 = 0x1fff;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

/// The first 4 bytes of TCP and UDP headers.
#[repr(C)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

pub const TCP_CSUM_OFF: usize = 16;
pub const TCP_MIN_HLEN: usize = 20;
pub const UDP_CSUM_OFF: usize = 6;
pub const UDP_HLEN: usize = 8;

/// A pointer to a `T` at `offset` in the frame, if the whole `T` lies inside it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

/// What the datapath needs of an IPv4 TCP/UDP packet.
pub struct Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub ports: *mut Ports,
    pub l4_csum: *mut u16,
    pub proto: u8,
}

/// Why a frame is not handled by the load balancer.
pub enum Skip {
    /// Not IPv4 TCP/UDP, or not a complete header: the kernel's business.
    NotOurs,
    /// An IPv4 fragment: left to the kernel for now.
    Fragment,
    /// An IPv4 header that cannot be right (IHL < 5).
    Malformed,
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Packet, Skip> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| Skip::NotOurs)?;
    // SAFETY: bounds checked by ptr_at.
    if unsafe { (*eth).proto } != ETH_P_IP.to_be() {
        return Err(Skip::NotOurs);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| Skip::NotOurs)?;
    let (version_ihl, proto, frag_off) =
        unsafe { ((*ip).version_ihl, (*ip).protocol, u16::from_be((*ip).frag_off)) };
    if version_ihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    if proto != lb_common::PROTO_TCP && proto != lb_common::PROTO_UDP {
        return Err(Skip::NotOurs);
    }
    if frag_off & (IP_MF | IP_OFFSET) != 0 {
        return Err(Skip::Fragment);
    }
    let l4 = ETH_HLEN + ihl;
    let l4_csum: *mut u16 = if proto == lb_common::PROTO_TCP {
        let _: *mut [u8; TCP_MIN_HLEN] = ptr_at(ctx, l4).map_err(|_| Skip::NotOurs)?;
        ptr_at(ctx, l4 + TCP_CSUM_OFF).map_err(|_| Skip::NotOurs)?
    } else {
        let _: *mut [u8; UDP_HLEN] = ptr_at(ctx, l4).map_err(|_| Skip::NotOurs)?;
        ptr_at(ctx, l4 + UDP_CSUM_OFF).map_err(|_| Skip::NotOurs)?
    };
    let ports: *mut Ports = ptr_at(ctx, l4).map_err(|_| Skip::NotOurs)?;
    Ok(Packet { eth, ip, ports, l4_csum, proto })
}
