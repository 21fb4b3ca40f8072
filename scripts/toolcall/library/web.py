"""Computing tools: IP addresses and networks (ipaddress), URLs (urllib.parse), HTTP status codes, MIME types and
POSIX paths, file permission bits (stat), colours (colorsys) and list operations (collections, heapq, bisect,
itertools)."""
import bisect
import colorsys
import collections
import heapq
import http
import ipaddress
import itertools
import mimetypes
import posixpath
import stat
import urllib.parse

from scripts.toolcall.library import pools
from scripts.toolcall.library.base import Family, I, L, Param, S, opt

# ------------------------------------------------------------------------------------------------ network
NETWORK = Family("network")
IP = S(pools.ipv4, "IPv4 地址", "IPv4 address")
CIDR = S(pools.cidr, "网段（CIDR，如 192.168.1.0/24）", "network in CIDR form")
NETWORK.add("ip_info", lambda address: (lambda ip: {"version": ip.version, "private": ip.is_private,
                                                    "global": ip.is_global,
                                                    "multicast": ip.is_multicast})(ipaddress.ip_address(address)),
            "IP 地址的版本、是否私有/公网/组播", "Version of an IP address and whether it is private, global or multicast",
            {"address": S(lambda r: pools.ipv4(r) if r.random() < 0.8 else r.choice(["::1", "2001:db8::1", "fe80::1",
                                                                                     "224.0.0.1", "127.0.0.1"]),
                          "IP 地址", "IP address")},
            ["{address} 是内网地址吗？", "查一下 IP {address} 的信息"], ["Is {address} a private address?",
                                                            "Tell me about IP {address}."],
            "{address} 是 IPv{r[version]}，私有地址：{r[private]}，公网地址：{r[global]}。",
            "{address} is IPv{r[version]}; private: {r[private]}, global: {r[global]}.")
NETWORK.add("network_info", lambda network: (lambda n: {"network": str(n.network_address), "netmask": str(n.netmask),
                                                        "broadcast": str(n.broadcast_address),
                                                        "addresses": n.num_addresses})(
    ipaddress.ip_network(network, strict=False)), "网段的网络地址、子网掩码、广播地址和地址数",
            "Network address, netmask, broadcast address and size of a CIDR network", {"network": CIDR},
            ["{network} 的子网掩码和广播地址是什么？", "网段 {network} 有多少个地址？"],
            ["What are the netmask and broadcast address of {network}?", "How many addresses are in {network}?"],
            "网络地址 {r[network]}，掩码 {r[netmask]}，广播 {r[broadcast]}，共 {r[addresses]} 个地址。",
            "Network {r[network]}, netmask {r[netmask]}, broadcast {r[broadcast]}, {r[addresses]} addresses.")
NETWORK.add("ip_in_network",
            lambda address, network: ipaddress.ip_address(address) in ipaddress.ip_network(network, strict=False),
            "判断 IP 地址是否属于某个网段", "Whether an IP address belongs to a network",
            {"address": IP, "network": S(lambda r: r.choice(["192.168.0.0/16", "10.0.0.0/8", "172.16.0.0/12",
                                                             "192.168.1.0/24",
                                                             "100.64.0.0/10", "8.8.8.0/24"]), "网段 CIDR",
                                         "network CIDR")},
            ["{address} 在 {network} 网段里吗？"], ["Is {address} inside {network}?"], "{address} 属于 {network} 吗？{r}。",
            "Is {address} in {network}? {r}.")
NETWORK.add("ip_to_integer", lambda address: int(ipaddress.ip_address(address)), "把 IPv4 地址转换成整数",
            "Integer value of an IPv4 address", {"address": IP}, ["{address} 转成整数是多少？"],
            ["What is {address} as an integer?"], "对应整数 {r}。", "As an integer it is {r}.")
NETWORK.add("integer_to_ip", lambda number: str(ipaddress.ip_address(number)), "把整数转换成 IPv4 地址",
            "IPv4 address of an integer", {"number": I(16777216, 3758096383, "0 到 2^32-1 的整数", "integer below 2^32")},
            ["整数 {number} 对应哪个 IP 地址？"], ["Which IPv4 address is {number}?"], "是 {r}。", "It is {r}.")
NETWORK.add("split_subnets", lambda network, new_prefix: [str(s) for s in itertools.islice(
    ipaddress.ip_network(network, strict=False).subnets(new_prefix=new_prefix), 4)],
            "把网段划分成更小的子网（最多列出前 4 个）", "Split a network into subnets of a longer prefix (first 4 listed)",
            {"network": S(lambda r: f"{pools.ipv4(r)}/{r.randint(16, 24)}", "网段 CIDR", "network CIDR"),
             "new_prefix": I(25, 28, "新前缀长度", "new prefix length")},
            ["把 {network} 划分成 /{new_prefix} 的子网，前几个是什么？"], ["Split {network} into /{new_prefix} subnets."],
            "前几个子网：{r}", "The first subnets: {r}")
NETWORK.add("reverse_dns_name", lambda address: ipaddress.ip_address(address).reverse_pointer,
            "IP 地址的反向 DNS（PTR）域名", "Reverse-DNS (PTR) name of an IP address", {"address": IP},
            ["{address} 的反向解析域名是什么？"], ["What is the reverse DNS name of {address}?"], "是 {r}。", "It is {r}.")

# ------------------------------------------------------------------------------------------------ URLs
URLS = Family("url")
URL = S(pools.url, "URL", "URL")
URLS.add("parse_url", lambda url: (lambda u: {"scheme": u.scheme, "host": u.hostname, "path": u.path,
                                              "query": u.query})(
    urllib.parse.urlsplit(url)), "把 URL 拆成协议、主机、路径和查询串", "Split a URL into scheme, host, path and query",
         {"url": URL}, ["解析一下这个网址：{url}", "{url} 的主机名和路径是什么？"], ["Parse this URL: {url}",
                                                                 "What host and path does {url} have?"],
         "协议 {r[scheme]}，主机 {r[host]}，路径 {r[path]}。", "Scheme {r[scheme]}, host {r[host]}, path {r[path]}.")
URLS.add("url_query_params", lambda url: dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)),
         "提取 URL 查询串里的参数", "Query parameters of a URL as a dict",
         {"url": S(lambda r: pools.url(r).split("?")[0] + f"?q={r.choice(pools.EN_WORDS)}&page={r.randint(1, 20)}",
                   "URL", "URL")},
         ["{url} 里有哪些查询参数？"], ["What query parameters does {url} carry?"], "参数：{r}", "Parameters: {r}")
URLS.add("build_query_string", lambda params: urllib.parse.urlencode(params), "把参数字典编码成 URL 查询串",
         "Encode a dict of parameters as a URL query string",
         {"params": Param("object", "参数字典", "parameters",
                          lambda r: {k: r.choice(pools.EN_WORDS + [str(r.randint(1, 99))])
                                                                        for k in r.sample(["q", "lang", "page", "sort",
                                                                                           "user"], 2)})},
         ["把参数 {params} 拼成查询串。"], ["Build a query string from {params}."], "查询串是 {r}", "The query string is {r}")
URLS.add("url_decode", lambda text: urllib.parse.unquote(text), "解码 URL 中的百分号编码",
         "Decode percent-escapes of a URL string",
         {"text": S(lambda r: urllib.parse.quote(r.choice(pools.ZH_WORDS + ["a b&c", "hello world"])), "已编码文本",
                    "encoded text")},
         ["把 {text} 解码。"], ["URL-decode {text}."], "解码结果：{r}", "Decoded: {r}")
URLS.add("join_url", lambda base, link: urllib.parse.urljoin(base, link), "把相对链接拼接到基础 URL 上",
         "Resolve a relative link against a base URL",
         {"base": URL, "link": S(lambda r: r.choice(["../img/a.png", "/about", "next.html", "?page=2", "#top",
                                                     "./docs/"]),
                                 "相对链接", "relative link")},
         ["基础地址 {base}，相对链接 {link}，完整地址是什么？"], ["Resolve {link} against {base}."], "完整地址：{r}", "Full URL: {r}")
URLS.add("url_domain_parts", lambda url: (lambda h: {"host": h, "top_level": h.rsplit(".", 1)[-1] if "." in h else "",
                                                     "labels": len(h.split("."))})(urllib.parse.urlsplit(url).hostname),
         "URL 主机名的顶级域和层级数", "Top-level domain and number of labels of a URL's host", {"url": URL},
         ["{url} 的顶级域名是什么？"], ["What is the top-level domain of {url}?"], "主机 {r[host]}，顶级域 {r[top_level]}。",
         "Host {r[host]}, top-level domain {r[top_level]}.")

# ------------------------------------------------------------------------------------------------ files and HTTP
FILES = Family("files")
FILES.add("http_status", lambda code: (lambda s: {"phrase": s.phrase,
                                                  "description": s.description})(http.HTTPStatus(code)),
          "HTTP 状态码的含义", "Meaning of an HTTP status code",
          {"code": Param("integer", "状态码", "status code", lambda r: r.choice([int(s) for s in http.HTTPStatus
                                                                            if s.description]))},
          ["HTTP 状态码 {code} 是什么意思？"], ["What does HTTP status {code} mean?"], "{code} 表示 {r[phrase]}：{r[description]}",
          "{code} means {r[phrase]}: {r[description]}")
FILES.add("mime_type", lambda filename: mimetypes.guess_type(filename)[0] or "unknown", "根据文件名猜 MIME 类型",
          "Guess the MIME type of a file name", {"filename": S(pools.FILE_NAMES, "文件名", "file name")},
          ["{filename} 的 MIME 类型是什么？"], ["What MIME type is {filename}?"], "MIME 类型是 {r}。", "The MIME type is {r}.")
FILES.add("file_extension", lambda path: posixpath.splitext(path)[1], "文件路径的扩展名", "Extension of a file path",
          {"path": S(lambda r: "/".join(r.sample(pools.PATH_WORDS, 2)) + "/" + r.choice(pools.FILE_NAMES), "文件路径",
                     "file path")},
          ["{path} 的扩展名是什么？"], ["What is the extension of {path}?"], "扩展名是 {r}。", "The extension is {r}.")
FILES.add("normalize_path", posixpath.normpath, "规范化 POSIX 路径（去掉 . 和 ..）", "Normalise a POSIX path (resolve . and ..)",
          {"path": S(lambda r: "/" + "/".join(r.choice(pools.PATH_WORDS + ["..", ".",
                                                                           ""]) for _ in range(r.randint(3, 6))),
                     "路径", "path")},
          ["把路径 {path} 规范化。"], ["Normalise the path {path}."], "规范化后是 {r}。", "It normalises to {r}.")
FILES.add("path_parts", lambda path: {"dirname": posixpath.dirname(path), "basename": posixpath.basename(path)},
          "拆分路径的目录部分和文件名", "Directory part and file name of a path",
          {"path": S(lambda r: "/home/" + "/".join(r.sample(pools.PATH_WORDS, 2)) + "/" + r.choice(pools.FILE_NAMES),
                     "路径", "path")},
          ["{path} 的目录和文件名分别是什么？"], ["Split {path} into directory and file name."],
          "目录 {r[dirname]}，文件名 {r[basename]}。", "Directory {r[dirname]}, file {r[basename]}.")
FILES.add("permission_string", lambda mode: stat.filemode(int(mode, 8) | stat.S_IFREG), "把八进制权限（如 755）转成 rwx 形式",
          "rwx form of an octal file mode such as 755",
          {"mode": S(lambda r: r.choice(["755", "644", "600", "777", "700", "640", "444", "750", "664"]), "八进制权限",
                     "octal mode")},
          ["权限 {mode} 用 rwx 表示是什么？"], ["What is mode {mode} in rwx form?"], "是 {r}。", "It is {r}.")
FILES.add("human_size", lambda size_bytes: next(f"{size_bytes / 1024 ** i:.1f} {u}" for i, u in enumerate(
    ["B", "KiB", "MiB", "GiB", "TiB"]) if size_bytes < 1024 ** (i + 1) or u == "TiB"),
          "把字节数写成易读的大小（KiB、MiB ...）", "Human-readable size of a byte count (KiB, MiB, ...)",
          {"size_bytes": I(100, 10 ** 13, "字节数", "bytes")}, ["{size_bytes} 字节是多大？"], ["How big is {size_bytes} bytes?"],
          "约 {r}。", "About {r}.")

# ------------------------------------------------------------------------------------------------ colours
COLORS = Family("color")
HEX = S(pools.hex_color, "十六进制颜色，如 #ff8800", "hex colour such as #ff8800")
RGB = {c: I(0, 255, f"{c} 分量 0-255", f"{c} component 0-255") for c in ("red", "green", "blue")}


def _rgb(hex_color):
    h = hex_color.lstrip("#")
    return tuple(int(h[i:i + 2], 16) for i in (0, 2, 4))


COLORS.add("hex_to_rgb", lambda hex_color: dict(zip(("red", "green", "blue"), _rgb(hex_color))), "把十六进制颜色转换成 RGB",
           "RGB components of a hex colour", {"hex_color": HEX}, ["颜色 {hex_color} 的 RGB 值是多少？"],
           ["What are the RGB values of {hex_color}?"], "RGB 是 ({r[red]}, {r[green]}, {r[blue]})。",
           "RGB is ({r[red]}, {r[green]}, {r[blue]}).")
COLORS.add("rgb_to_hex", lambda red, green, blue: f"#{red:02x}{green:02x}{blue:02x}", "把 RGB 颜色转换成十六进制",
           "Hex code of an RGB colour",
           RGB, ["RGB({red}, {green}, {blue}) 的十六进制是什么？"], ["Hex code for RGB({red}, {green}, {blue})?"], "是 {r}。",
           "It is {r}.")
COLORS.add("rgb_to_hsv", lambda red, green, blue: (lambda h, s, v: {"hue": round(h * 360), "saturation": round(s * 100),
                                                                     "value": round(v * 100)})(
    *colorsys.rgb_to_hsv(red / 255, green / 255, blue / 255)), "把 RGB 转换成 HSV（色相度数、饱和度%、明度%）",
           "HSV of an RGB colour (hue in degrees, saturation and value in %)", RGB,
           ["RGB({red},{green},{blue}) 转成 HSV 是多少？"], ["Convert RGB({red}, {green}, {blue}) to HSV."],
           "色相 {r[hue]}°，饱和度 {r[saturation]}%，明度 {r[value]}%。",
           "Hue {r[hue]}, saturation {r[saturation]}%, value {r[value]}%.")
COLORS.add("rgb_to_hls", lambda red, green, blue: (lambda h, l, s: {"hue": round(h * 360), "lightness": round(l * 100),
                                                                     "saturation": round(s * 100)})(
    *colorsys.rgb_to_hls(red / 255, green / 255, blue / 255)), "把 RGB 转换成 HLS（色相、亮度%、饱和度%）",
           "HLS of an RGB colour (hue in degrees, lightness and saturation in %)", RGB,
           ["RGB({red},{green},{blue}) 的 HLS 是多少？"], ["What is RGB({red}, {green}, {blue}) in HLS?"],
           "色相 {r[hue]}°，亮度 {r[lightness]}%，饱和度 {r[saturation]}%。",
           "Hue {r[hue]}, lightness {r[lightness]}%, saturation {r[saturation]}%.")
COLORS.add("hsv_to_rgb", lambda hue, saturation, value: dict(zip(("red", "green", "blue"),
                                                                 (round(c * 255) for c in colorsys.hsv_to_rgb(
    hue / 360, saturation / 100, value / 100)))), "把 HSV 转换成 RGB", "RGB of an HSV colour",
           {"hue": I(0, 359, "色相 0-359", "hue 0-359"), "saturation": I(0, 100, "饱和度 %", "saturation %"),
            "value": I(0, 100, "明度 %", "value %")},
           ["HSV({hue}, {saturation}%, {value}%) 对应的 RGB 是多少？"],
           ["Convert HSV({hue}, {saturation}%, {value}%) to RGB."],
           "RGB 是 ({r[red]}, {r[green]}, {r[blue]})。", "RGB is ({r[red]}, {r[green]}, {r[blue]}).")
COLORS.add("complementary_color", lambda hex_color: "#" + "".join(f"{255 - c:02x}" for c in _rgb(hex_color)),
           "颜色的互补色（RGB 取反）", "Complementary colour of a hex colour (RGB inverted)", {"hex_color": HEX},
           ["{hex_color} 的互补色是什么？"], ["What is the complement of {hex_color}?"], "互补色是 {r}。", "The complement is {r}.")
COLORS.add("relative_luminance", lambda hex_color: round(sum(
    w * ((c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4)
    for w, c in zip((0.2126, 0.7152, 0.0722), _rgb(hex_color))), 4), "颜色的相对亮度（WCAG 定义，0 黑到 1 白）",
           "Relative luminance of a colour (WCAG, 0 black to 1 white)", {"hex_color": HEX},
           ["{hex_color} 的相对亮度是多少？"], ["Relative luminance of {hex_color}?"], "相对亮度是 {r}。",
           "Its relative luminance is {r}.")
COLORS.add("mix_colors", lambda color_a, color_b: "#" + "".join(f"{(x + y) // 2:02x}" for x, y in zip(_rgb(color_a),
                                                                                                      _rgb(color_b))),
           "两种颜色按 1:1 混合", "Average of two hex colours", {"color_a": HEX, "color_b": HEX},
           ["{color_a} 和 {color_b} 混在一起是什么颜色？"], ["Mix {color_a} with {color_b}."], "混合色是 {r}。", "The mix is {r}.")

# ------------------------------------------------------------------------------------------------ lists
LISTS = Family("lists")
INTS = L(lambda r: r.randint(-50, 200), 4, 9, "整数列表", "list of integers", "integer")
WORDS = L(lambda r: r.choice(pools.EN_WORDS[:20]), 4, 8, "单词列表", "list of words", "string")
LISTS.add("sort_numbers", lambda numbers, descending=False: sorted(numbers, reverse=descending), "把一组数字排序",
          "Sort numbers (ascending unless descending is true)",
          {"numbers": INTS, "descending": opt(Param("boolean", "是否降序", "sort descending", lambda r: r.random() < 0.5),
                                              False)},
          ["把 {numbers} 从小到大排序。", "把 {numbers} 排个序，降序：{descending}"],
          ["Sort {numbers} in ascending order.", "Sort {numbers}; descending: {descending}."], "排序结果：{r}",
          "Sorted: {r}")
LISTS.add("unique_items", lambda items: list(dict.fromkeys(items)), "去掉列表中的重复项，保留首次出现的顺序",
          "Remove duplicates from a list, keeping first-seen order", {"items": WORDS},
          ["把 {items} 去重。"], ["Remove the duplicates from {items}."], "去重后：{r}", "Without duplicates: {r}")
LISTS.add("count_items", lambda items: dict(collections.Counter(items).most_common()), "统计列表中每项出现的次数",
          "How many times each item occurs in a list", {"items": WORDS},
          ["统计 {items} 里每个词出现几次。"], ["Count each item in {items}."], "统计：{r}", "Counts: {r}")
LISTS.add("list_intersection", lambda a, b: sorted(set(a) & set(b)), "两个列表的交集（排序后）", "Sorted intersection of two lists",
          {"a": L(lambda r: r.randint(1, 30), 5, 8, "第一个列表", "first list", "integer"),
           "b": L(lambda r: r.randint(1, 30), 5, 8, "第二个列表", "second list", "integer")},
          ["{a} 和 {b} 的交集是什么？"], ["What do {a} and {b} have in common?"], "交集是 {r}。", "The intersection is {r}.")
LISTS.add("list_difference", lambda a, b: sorted(set(a) - set(b)), "在第一个列表中但不在第二个中的元素（排序后）",
          "Sorted items of the first list that are not in the second",
          {"a": L(lambda r: r.randint(1, 30), 5, 8, "第一个列表", "first list", "integer"),
           "b": L(lambda r: r.randint(1, 30), 5, 8, "第二个列表", "second list", "integer")},
          ["{a} 里有哪些数不在 {b} 里？"], ["Which items of {a} are not in {b}?"], "差集是 {r}。", "The difference is {r}.")
LISTS.add("top_k_largest", lambda numbers, k: heapq.nlargest(k, numbers), "列表中最大的 k 个数",
          "The k largest numbers of a list",
          {"numbers": INTS, "k": I(1, 4, "k", "k")}, ["{numbers} 中最大的 {k} 个数是哪些？"], ["The {k} largest of {numbers}?"],
          "最大的 {k} 个是 {r}。", "The {k} largest are {r}.")
LISTS.add("insert_position", lambda sorted_numbers, value: bisect.bisect_left(sorted_numbers, value),
          "在有序列表中二分查找插入位置（从 0 开始）", "Index where a value would be inserted in a sorted list (bisect)",
          {"sorted_numbers": Param("array", "有序整数列表", "sorted list of integers",
                                        lambda r: sorted(r.sample(range(0, 100), r.randint(4, 8))), items="integer"),
           "value": I(0, 100, "要插入的值", "value to insert")},
          ["在有序列表 {sorted_numbers} 里，{value} 应插在哪个位置？"],
          ["Where would {value} go in the sorted list {sorted_numbers}?"],
          "应插在下标 {r}。", "At index {r}.")
LISTS.add("chunk_list", lambda items, size: [items[i:i + size] for i in range(0, len(items), size)], "把列表按固定大小分块",
          "Split a list into chunks of a given size", {"items": WORDS, "size": I(2, 3, "每块大小", "chunk size")},
          ["把 {items} 每 {size} 个分成一组。"], ["Split {items} into chunks of {size}."], "分组结果：{r}", "Chunks: {r}")
LISTS.add("cumulative_sum", lambda numbers: list(itertools.accumulate(numbers)), "列表的前缀和（累加）",
          "Running totals of a list",
          {"numbers": INTS}, ["求 {numbers} 的累加和序列。"], ["Running totals of {numbers}?"], "累加序列：{r}",
          "Running totals: {r}")
LISTS.add("list_permutations", lambda items: ["".join(p) for p in itertools.permutations(items)], "列出几个字符的全排列",
          "All orderings of a few characters",
          {"items": Param("array", "字符列表（不超过 3 个）", "up to 3 characters", lambda r: r.sample(list("ABCDXYZ"), 3),
                               items="string")},
          ["{items} 有哪些排列方式？"], ["List all orderings of {items}."], "全排列：{r}", "All orderings: {r}")

FAMILIES = [NETWORK, URLS, FILES, COLORS, LISTS]
