"""Number tools: math, statistics, fractions/decimal, number bases, money formulas, geometry and unit conversion.
Each runs the standard-library function (or the textbook formula) on the generated arguments."""
import math
import statistics
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from fractions import Fraction

from scripts.toolcall.library.base import E, F, Family, I, L, S, opt
from scripts.toolcall.calc import calculate

num = lambda r: round(r.uniform(-50, 150), 1)  # noqa: E731
NUMS = L(num, 3, 8, "一组数字", "a list of numbers")

# ------------------------------------------------------------------------------------------------ math
MATH = Family("math")
a = I(2, 5000, "第一个整数", "first integer")
b = I(2, 5000, "第二个整数", "second integer")
MATH.add("gcd", lambda a, b: math.gcd(a, b), "求两个整数的最大公约数", "Greatest common divisor of two integers",
         {"a": a, "b": b}, ["{a} 和 {b} 的最大公约数是多少？", "求 {a}、{b} 的最大公因数。"],
         ["What is the greatest common divisor of {a} and {b}?", "gcd of {a} and {b}?"],
         "{a} 和 {b} 的最大公约数是 {r}。", "The greatest common divisor of {a} and {b} is {r}.")
MATH.add("lcm", lambda a, b: math.lcm(a, b), "求两个整数的最小公倍数", "Least common multiple of two integers",
         {"a": I(2, 300, "第一个整数", "first integer"), "b": I(2, 300, "第二个整数", "second integer")},
         ["{a} 和 {b} 的最小公倍数是多少？", "帮我算 {a} 与 {b} 的最小公倍数"],
         ["Find the least common multiple of {a} and {b}.", "What's the LCM of {a} and {b}?"],
         "{a} 和 {b} 的最小公倍数是 {r}。", "The least common multiple of {a} and {b} is {r}.")
MATH.add("factorial", lambda n: math.factorial(n), "计算非负整数 n 的阶乘 n!", "Factorial n! of a non-negative integer",
         {"n": I(0, 20, "非负整数", "a non-negative integer")}, ["{n} 的阶乘是多少？", "算一下 {n}!"],
         ["What is {n} factorial?", "Compute {n}!"], "{n}! = {r}。", "{n}! = {r}.")
MATH.add("combinations", lambda n, k: math.comb(n, k), "组合数：从 n 个中不计顺序选 k 个的方法数",
         "Number of ways to choose k items from n without order (n choose k)",
         {"n": I(2, 40, "总数 n", "total items n"), "k": I(1, 10, "选出的个数 k", "items chosen k")},
         ["从 {n} 个人里选 {k} 个，有多少种选法？", "组合数 C({n},{k}) 等于多少？"],
         ["How many ways are there to choose {k} out of {n}?", "Compute {n} choose {k}."],
         "从 {n} 个中选 {k} 个共有 {r} 种选法。", "There are {r} ways to choose {k} of {n}.",
         check=lambda x: x["k"] <= x["n"])
MATH.add("permutations", lambda n, k: math.perm(n, k), "排列数：从 n 个中按顺序取 k 个的方法数",
         "Number of ordered arrangements of k items taken from n",
         {"n": I(2, 20, "总数 n", "total items n"), "k": I(1, 6, "取出的个数 k", "items arranged k")},
         ["从 {n} 个元素中取 {k} 个排成一列，有几种排法？", "排列数 A({n},{k}) 是多少？"],
         ["How many ordered arrangements of {k} items from {n} are there?", "Permutations P({n}, {k})?"],
         "排列数是 {r}。", "There are {r} ordered arrangements.", check=lambda x: x["k"] <= x["n"])
MATH.add("square_root", lambda x: math.sqrt(x), "求一个非负数的平方根", "Square root of a non-negative number",
         {"x": F(0, 10000, "非负数", "a non-negative number")}, ["{x} 的平方根是多少？", "开平方：√{x}"],
         ["What is the square root of {x}?", "sqrt({x}) = ?"], "{x} 的平方根约为 {r}。",
         "The square root of {x} is about {r}.")
MATH.add("integer_sqrt", lambda n: math.isqrt(n), "整数平方根：不超过 √n 的最大整数",
         "Integer square root: the largest integer not above sqrt(n)",
         {"n": I(0, 10 ** 9, "非负整数", "a non-negative integer")}, ["{n} 的整数平方根是多少？"],
         ["What is the integer square root of {n}?"], "不超过 √{n} 的最大整数是 {r}。",
         "The integer square root of {n} is {r}.")
MATH.add("power", lambda base, exponent: math.pow(base, exponent), "计算 base 的 exponent 次幂",
         "Raise base to the power exponent",
         {"base": F(-20, 20, "底数", "the base"), "exponent": I(0, 8, "指数", "the exponent")},
         ["{base} 的 {exponent} 次方是多少？", "算 {base}^{exponent}"],
         ["What is {base} to the power of {exponent}?", "Compute {base}^{exponent}."],
         "{base} 的 {exponent} 次方是 {r}。", "{base} to the power {exponent} is {r}.")
MATH.add("logarithm", lambda x, base=math.e: math.log(x, base), "对数：x 以 base 为底的对数，省略 base 时为自然对数",
         "Logarithm of x to the given base (natural log when base is omitted)",
         {"x": F(0.5, 100000, "真数，大于 0", "a positive number"),
          "base": opt(I(2, 16, "底数", "the base"), None)},
         ["以 {base} 为底 {x} 的对数是多少？", "{x} 的自然对数是多少？"],
         ["What is log base {base} of {x}?", "What is the natural logarithm of {x}?"],
         "结果是 {r}。", "The logarithm is {r}.")
MATH.add("hypotenuse", lambda a, b: math.hypot(a, b), "已知直角三角形两条直角边，求斜边长",
         "Length of the hypotenuse of a right triangle from its two legs",
         {"a": F(1, 100, "一条直角边", "one leg"), "b": F(1, 100, "另一条直角边", "other leg")},
         ["直角边分别是 {a} 和 {b}，斜边多长？"], ["A right triangle has legs {a} and {b}. How long is the hypotenuse?"],
         "斜边长约 {r}。", "The hypotenuse is about {r}.")
MATH.add("degrees_to_radians", lambda degrees: math.radians(degrees), "把角度转换为弧度", "Convert degrees to radians",
         {"degrees": F(-360, 360, "角度", "angle in degrees", 0)}, ["{degrees} 度等于多少弧度？"],
         ["Convert {degrees} degrees to radians."], "{degrees}° 约等于 {r} 弧度。", "{degrees} degrees is {r} radians.")
MATH.add("radians_to_degrees", lambda radians: math.degrees(radians), "把弧度转换为角度", "Convert radians to degrees",
         {"radians": F(-6.3, 6.3, "弧度", "angle in radians", 2)}, ["{radians} 弧度是多少度？"],
         ["How many degrees is {radians} radians?"], "{radians} 弧度约等于 {r}°。", "{radians} radians is {r} degrees.")
MATH.add("trig_value", lambda function, degrees: getattr(math, function)(math.radians(degrees)),
         "三角函数值：按角度计算 sin、cos 或 tan", "sin, cos or tan of an angle given in degrees",
         {"function": E(["sin", "cos", "tan"], "三角函数", "the function"),
          "degrees": I(0, 360, "角度", "angle in degrees")},
         ["{function}({degrees}°) 等于多少？", "算一下 {degrees} 度的 {function} 值"],
         ["What is {function} of {degrees} degrees?"], "{function}({degrees}°) ≈ {r}。",
         "{function}({degrees}°) is about {r}.",
         check=lambda x: not (x["function"] == "tan" and x["degrees"] % 180 == 90))
MATH.add("is_prime", lambda n: {"n": n, "is_prime": n > 1 and all(n % d for d in range(2, math.isqrt(n) + 1))},
         "判断一个正整数是否为质数", "Whether a positive integer is prime",
         {"n": I(2, 100000, "正整数", "a positive integer")}, ["{n} 是质数吗？", "判断 {n} 是不是素数"],
         ["Is {n} a prime number?", "Check whether {n} is prime."], "{n} 是质数吗？{r[is_prime]}。",
         "Is {n} prime? {r[is_prime]}.")


def _factors(n):
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    return out + ([n] if n > 1 else [])


MATH.add("prime_factors", lambda n: _factors(n), "分解质因数，返回从小到大的质因数列表",
         "Prime factorisation: the prime factors in increasing order",
         {"n": I(2, 1000000, "大于 1 的整数", "an integer above 1")}, ["把 {n} 分解质因数。", "{n} 的质因数有哪些？"],
         ["Factor {n} into primes.", "What are the prime factors of {n}?"], "{n} 的质因数是：{r}。",
         "The prime factors of {n} are {r}.")
MATH.add("round_number", lambda x, digits=0: round(x, digits), "把数字四舍六入到指定的小数位数（Python 的 round）",
         "Round a number to a given number of decimal places (Python round)",
         {"x": F(-1000, 1000, "要取整的数", "the number", 4), "digits": opt(I(0, 3, "保留的小数位数", "decimal places"), 0)},
         ["把 {x} 保留 {digits} 位小数。", "{x} 取整是多少？"], ["Round {x} to {digits} decimal places.", "Round {x}."],
         "结果是 {r}。", "It rounds to {r}.")
MATH.add("calculator", lambda expression: {"result": calculate(expression)},
         "计算一个算术表达式（+ - * / 和括号），返回结果", "Evaluate an arithmetic expression (+ - * / and parentheses)",
         {"expression": S(lambda r: f"({r.randint(1, 999)}{r.choice('+-*')}{r.randint(1, 99)})"
                                    f"{r.choice('*+-/')}{r.randint(2, 50)}", "算术表达式", "arithmetic expression")},
         ["帮我算一下 {expression}", "计算：{expression}"], ["What is {expression}?", "Calculate {expression}."],
         "{expression} = {r[result]}。", "{expression} = {r[result]}.")

# ------------------------------------------------------------------------------------------------ statistics
STATS = Family("statistics")
for name, fn, zh, en, zq, eq in [
        ("mean", statistics.mean, "算术平均数", "arithmetic mean", "平均数", "average"),
        ("median", statistics.median, "中位数", "median", "中位数", "median"),
        ("stdev", statistics.stdev, "样本标准差", "sample standard deviation", "样本标准差", "sample standard deviation"),
        ("pstdev", statistics.pstdev, "总体标准差", "population standard deviation", "总体标准差",
         "population standard deviation"),
        ("variance", statistics.variance, "样本方差", "sample variance", "样本方差", "sample variance"),
        ("pvariance", statistics.pvariance, "总体方差", "population variance", "总体方差", "population variance")]:
    STATS.add(f"stats_{name}", lambda numbers, fn=fn: fn(numbers), f"计算一组数的{zh}", f"The {en} of a list of numbers",
              {"numbers": NUMS}, [f"{{numbers}} 的{zq}是多少？", f"求这组数据的{zq}：{{numbers}}"],
              [f"What is the {eq} of {{numbers}}?", f"Compute the {eq} of these numbers: {{numbers}}"],
              f"这组数的{zq}是 {{r}}。", f"The {eq} is {{r}}.")
POS = L(lambda r: r.randint(1, 200), 3, 7, "一组正数", "a list of positive numbers")
STATS.add("harmonic_mean", statistics.harmonic_mean, "计算一组正数的调和平均数", "Harmonic mean of positive numbers",
          {"data": POS}, ["{data} 的调和平均数是多少？"], ["What is the harmonic mean of {data}?"],
          "调和平均数是 {r}。", "The harmonic mean is {r}.")
STATS.add("geometric_mean", statistics.geometric_mean, "计算一组正数的几何平均数", "Geometric mean of positive numbers",
          {"data": POS}, ["求 {data} 的几何平均数。"], ["Geometric mean of {data}?"], "几何平均数约为 {r}。",
          "The geometric mean is about {r}.")
STATS.add("mode", lambda data: statistics.multimode(data), "找出一组数据中出现次数最多的值（可能有多个）",
          "The most common values of a list (all of them when tied)",
          {"data": L(lambda r: r.randint(1, 9), 5, 10, "一组整数", "a list of integers", "integer")},
          ["{data} 里出现最多的数是哪个？", "求众数：{data}"], ["What is the mode of {data}?"], "众数是 {r}。",
          "The mode is {r}.")
STATS.add("quartiles", lambda data: statistics.quantiles(data, n=4), "计算一组数据的三个四分位数",
          "The three quartile cut points of a list of numbers", {"data": L(num, 5, 9, "一组数字", "a list of numbers")},
          ["{data} 的四分位数是多少？"], ["Give me the quartiles of {data}."], "三个四分位数是 {r}。",
          "The quartiles are {r}.")


STATS.add("correlation", lambda x, y: statistics.correlation(x, y), "计算两组数据的皮尔逊相关系数",
          "Pearson correlation coefficient of two equally long lists",
          {"x": L(lambda r: r.randint(1, 50), 5, 5, "第一组数据", "first list", "integer"),
           "y": L(lambda r: r.randint(1, 50), 5, 5, "第二组数据", "second list", "integer")},
          ["x={x}，y={y}，它们的相关系数是多少？"], ["What is the correlation between {x} and {y}?"],
          "相关系数是 {r}。", "The correlation coefficient is {r}.")
STATS.add("linear_regression", lambda x, y: dict(zip(("slope", "intercept"), statistics.linear_regression(x, y))),
          "简单线性回归（最小二乘），返回斜率和截距", "Ordinary least-squares line through (x, y): slope and intercept",
          {"x": L(lambda r: r.randint(1, 50), 5, 5, "自变量 x", "x values", "integer"),
           "y": L(lambda r: r.randint(1, 50), 5, 5, "因变量 y", "y values", "integer")},
          ["用 x={x} 和 y={y} 做线性回归，斜率和截距是多少？"], ["Fit a line to x={x}, y={y}: slope and intercept?"],
          "斜率 {r[slope]}，截距 {r[intercept]}。", "Slope {r[slope]}, intercept {r[intercept]}.")
STATS.add("sum_numbers", lambda numbers: math.fsum(numbers), "精确求一组数的和", "Exact sum of a list of numbers",
          {"numbers": NUMS}, ["把 {numbers} 加起来是多少？"], ["Add up {numbers}."], "总和是 {r}。", "The sum is {r}.")
STATS.add("product_numbers", lambda numbers: math.prod(numbers), "求一组整数的乘积", "Product of a list of integers",
          {"numbers": L(lambda r: r.randint(-12, 12), 2, 5, "一组整数", "a list of integers", "integer")},
          ["{numbers} 相乘等于多少？"], ["Multiply {numbers} together."], "乘积是 {r}。", "The product is {r}.")
STATS.add("data_range", lambda numbers: {"min": min(numbers), "max": max(numbers),
                                         "range": max(numbers) - min(numbers)},
          "一组数的最小值、最大值和极差", "Minimum, maximum and range of a list of numbers", {"numbers": NUMS},
          ["{numbers} 的最大值、最小值和极差是多少？"], ["What are the min, max and range of {numbers}?"],
          "最小 {r[min]}，最大 {r[max]}，极差 {r[range]}。", "Min {r[min]}, max {r[max]}, range {r[range]}.")

# ------------------------------------------------------------------------------------------------ fractions
FRACTION = Family("fraction")
frac = S(lambda r: f"{r.randint(1, 60)}/{r.randint(2, 60)}", "分数，如 3/4", "a fraction such as 3/4")
FRACTION.add("simplify_fraction", lambda fraction: str(Fraction(fraction)), "把分数约分成最简分数",
             "Reduce a fraction to lowest terms", {"fraction": frac}, ["把 {fraction} 约分。", "{fraction} 的最简分数是多少？"],
             ["Simplify the fraction {fraction}.", "Reduce {fraction} to lowest terms."], "{fraction} 约分后是 {r}。",
             "{fraction} simplifies to {r}.")
FRACTION.add("add_fractions", lambda a, b: str(Fraction(a) + Fraction(b)), "两个分数相加，结果为最简分数",
             "Add two fractions exactly (result in lowest terms)", {"a": frac, "b": frac},
             ["{a} 加 {b} 等于多少？"], ["What is {a} + {b}?"], "{a} + {b} = {r}。", "{a} + {b} = {r}.")
FRACTION.add("multiply_fractions", lambda a, b: str(Fraction(a) * Fraction(b)), "两个分数相乘，结果为最简分数",
             "Multiply two fractions exactly (lowest terms)", {"a": frac, "b": frac},
             ["{a} 乘以 {b} 是多少？"], ["What is {a} times {b}?"], "{a} × {b} = {r}。", "{a} x {b} = {r}.")
FRACTION.add("decimal_to_fraction",
             lambda x, max_denominator=1000: str(Fraction(str(x)).limit_denominator(max_denominator)),
             "把小数化成分数（分母不超过 max_denominator）", "Closest fraction to a decimal with a bounded denominator",
             {"x": F(0, 10, "小数", "a decimal number", 3),
              "max_denominator": opt(I(2, 100, "最大分母", "largest denominator"), 1000)},
             ["{x} 化成分数是多少？", "把 {x} 写成分母不超过 {max_denominator} 的分数"],
             ["Write {x} as a fraction.", "Closest fraction to {x} with denominator at most {max_denominator}?"],
             "{x} ≈ {r}。", "{x} is about {r}.")
FRACTION.add("fraction_to_decimal", lambda fraction, digits=6: float(round(Fraction(fraction), digits)),
             "把分数化成小数", "Decimal value of a fraction", {"fraction": frac,
                                                       "digits": opt(I(1, 6, "小数位数", "decimal places"), 6)},
             ["{fraction} 等于多少（保留 {digits} 位小数）？", "{fraction} 化成小数是多少？"],
             ["What is {fraction} as a decimal, to {digits} places?", "Convert {fraction} to a decimal."],
             "{fraction} = {r}。", "{fraction} = {r}.")
FRACTION.add("decimal_round",
             lambda value, places, mode="half_up": str(Decimal(value).quantize(
                 Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP if mode == "half_up" else ROUND_HALF_EVEN)),
             "用十进制精确舍入：四舍五入（half_up）或银行家舍入（half_even）",
             "Exact decimal rounding, half-up or banker's (half-even)",
             {"value": S(lambda r: f"{r.randint(0, 999)}.{r.randint(0, 99999):05d}", "十进制数字字符串", "decimal string"),
              "places": I(0, 3, "保留位数", "decimal places"),
              "mode": opt(E(["half_up", "half_even"], "舍入方式", "rounding mode"), "half_up")},
             ["用 {mode} 方式把 {value} 保留 {places} 位小数", "{value} 四舍五入到 {places} 位小数是多少？"],
             ["Round {value} to {places} places using {mode}.", "Round {value} to {places} decimal places."],
             "结果是 {r}。", "It is {r}.")
FRACTION.add("percentage", lambda part, whole: part / whole * 100, "part 占 whole 的百分比", "part as a percentage of whole",
             {"part": I(1, 500, "部分", "the part"), "whole": I(501, 5000, "总数", "the whole")},
             ["{part} 占 {whole} 的百分之几？"], ["What percentage of {whole} is {part}?"], "约占 {r}%。",
             "It is about {r}%.")
FRACTION.add("percent_change", lambda old, new: (new - old) / old * 100, "从旧值到新值的变化百分比",
             "Percentage change from an old value to a new one",
             {"old": I(10, 1000, "原值", "old value"), "new": I(10, 1000, "新值", "new value")},
             ["从 {old} 变到 {new}，变化了百分之多少？"], ["What is the percent change from {old} to {new}?"],
             "变化了 {r}%。", "The change is {r}%.")

# ------------------------------------------------------------------------------------------------ number bases
BASES = Family("number_base")
BASES.add("to_binary", lambda n: bin(n), "把整数转换为二进制字符串", "Binary string of an integer",
          {"n": I(0, 100000, "整数", "an integer")}, ["{n} 的二进制是什么？", "把 {n} 转成二进制"],
          ["What is {n} in binary?", "Convert {n} to binary."], "{n} 的二进制是 {r}。", "{n} in binary is {r}.")
BASES.add("to_hex", lambda n: hex(n), "把整数转换为十六进制字符串", "Hexadecimal string of an integer",
          {"n": I(0, 10 ** 7, "整数", "an integer")}, ["{n} 用十六进制怎么写？"], ["What is {n} in hex?"],
          "{n} 的十六进制是 {r}。", "{n} in hexadecimal is {r}.")
BASES.add("to_octal", lambda n: oct(n), "把整数转换为八进制字符串", "Octal string of an integer",
          {"n": I(0, 100000, "整数", "an integer")}, ["{n} 的八进制表示是什么？"], ["Convert {n} to octal."],
          "{n} 的八进制是 {r}。", "{n} in octal is {r}.")
BASES.add("parse_int_base", lambda digits, base: int(digits, base), "把某进制的数字字符串解析成十进制整数",
          "Parse a digit string written in the given base into a decimal integer",
          {"digits": S(lambda r: format(r.randint(1, 5000), r.choice("bx")), "数字字符串", "digit string"),
           "base": I(2, 16, "进制", "the base")},
          ["{base} 进制的 {digits} 等于十进制多少？"], ["What is {digits} (base {base}) in decimal?"],
          "{base} 进制的 {digits} 等于十进制 {r}。", "{digits} in base {base} is {r} in decimal.",
          check=lambda x: all(int(c, 16) < x["base"] for c in x["digits"]))
BASES.add("count_set_bits", lambda n: n.bit_count(), "统计整数二进制表示中 1 的个数", "Number of 1 bits of an integer",
          {"n": I(0, 10 ** 6, "非负整数", "a non-negative integer")}, ["{n} 的二进制里有几个 1？"],
          ["How many set bits does {n} have?"], "{n} 的二进制中有 {r} 个 1。", "{n} has {r} one bits.")
BASES.add("bit_length", lambda n: n.bit_length(), "表示一个整数需要的二进制位数", "Number of bits needed to write an integer",
          {"n": I(1, 10 ** 9, "正整数", "a positive integer")}, ["表示 {n} 需要多少个二进制位？"],
          ["How many bits are needed for {n}?"], "需要 {r} 位。", "It needs {r} bits.")

# ------------------------------------------------------------------------------------------------ money
FINANCE = Family("finance")
FINANCE.add("compound_interest",
            lambda principal, rate, years, times_per_year=1:
            round(principal * (1 + rate / 100 / times_per_year) ** (times_per_year * years), 2),
            "复利终值：本金按年利率（%）每年计息 times_per_year 次，years 年后的本息和",
            "Future value of a principal at an annual rate (%) compounded times_per_year times a year",
            {"principal": I(1000, 100000, "本金", "principal"), "rate": F(0.5, 8, "年利率（%）", "annual rate in %", 2),
             "years": I(1, 30, "年数", "years"), "times_per_year": opt(I(1, 12, "每年计息次数", "compounding per year"), 1)},
            ["本金 {principal} 元，年利率 {rate}%，存 {years} 年复利，最后有多少钱？",
             "{principal} 元按年利率 {rate}%、每年计息 {times_per_year} 次，{years} 年后本息多少？"],
            ["What does {principal} grow to at {rate}% a year compounded for {years} years?",
             "{principal} at {rate}% compounded {times_per_year} times a year for {years} years: final amount?"],
            "{years} 年后本息合计 {r} 元。", "After {years} years it grows to {r}.")
FINANCE.add("simple_interest", lambda principal, rate, years: round(principal * rate / 100 * years, 2),
            "单利利息：本金 × 年利率（%）× 年数", "Simple interest: principal x annual rate (%) x years",
            {"principal": I(1000, 100000, "本金", "principal"), "rate": F(0.5, 8, "年利率（%）", "annual rate in %", 2),
             "years": I(1, 10, "年数", "years")},
            ["{principal} 元按单利 {rate}% 存 {years} 年，利息是多少？"],
            ["Simple interest on {principal} at {rate}% for {years} years?"], "利息是 {r} 元。", "The interest is {r}.")


def _payment(principal, annual_rate, months):
    i = annual_rate / 100 / 12
    return round(principal / months if i == 0 else principal * i / (1 - (1 + i) ** -months), 2)


FINANCE.add("loan_payment", _payment, "等额本息贷款的月供", "Monthly payment of an amortised loan",
            {"principal": I(10000, 2000000, "贷款金额", "loan amount"),
             "annual_rate": F(2, 7, "年利率（%）", "annual rate in %", 2), "months": I(12, 360, "还款月数", "months")},
            ["贷款 {principal} 元，年利率 {annual_rate}%，分 {months} 个月还，月供多少？"],
            ["Monthly payment for a {principal} loan at {annual_rate}% over {months} months?"],
            "每月还款 {r} 元。", "The monthly payment is {r}.")
FINANCE.add("discount_price", lambda price, discount_percent: round(price * (1 - discount_percent / 100), 2),
            "打折后的价格", "Price after a percentage discount",
            {"price": F(5, 5000, "原价", "original price", 2), "discount_percent": I(5, 90, "折扣百分比", "discount in %")},
            ["原价 {price} 元，打 {discount_percent}% 的折扣后多少钱？"], ["What is {price} after a {discount_percent}% discount?"],
            "折后价 {r} 元。", "The discounted price is {r}.")
FINANCE.add("split_bill", lambda total, people, tip_percent=0: round(total * (1 + tip_percent / 100) / people, 2),
            "平摊账单（可加小费百分比），返回每人应付金额", "Each person's share of a bill, with an optional tip %",
            {"total": F(20, 3000, "账单总额", "bill total", 2), "people": I(2, 12, "人数", "number of people"),
             "tip_percent": opt(I(5, 20, "小费百分比", "tip in %"), 0)},
            ["{total} 元的账单 {people} 个人平分，每人多少？", "账单 {total} 元，加 {tip_percent}% 小费，{people} 人 AA 每人付多少？"],
            ["Split a {total} bill among {people} people.",
             "Bill {total}, {tip_percent}% tip, {people} people: each pays?"],
            "每人 {r} 元。", "Each person pays {r}.")
FINANCE.add("add_tax", lambda amount, tax_percent: {"tax": round(amount * tax_percent / 100, 2),
                                                    "total": round(amount * (1 + tax_percent / 100), 2)},
            "计算税额和含税总价", "Tax and total for an amount at a tax rate (%)",
            {"amount": F(1, 10000, "金额", "amount", 2), "tax_percent": F(1, 25, "税率（%）", "tax rate in %", 1)},
            ["{amount} 元加 {tax_percent}% 的税，总共多少？"], ["Add {tax_percent}% tax to {amount}."],
            "税额 {r[tax]}，含税合计 {r[total]}。", "Tax {r[tax]}, total {r[total]}.")
FINANCE.add("bmi", lambda weight_kg, height_m: {"bmi": round(weight_kg / height_m ** 2, 1)},
            "根据体重（千克）和身高（米）计算 BMI", "Body mass index from weight (kg) and height (m)",
            {"weight_kg": F(40, 120, "体重（千克）", "weight in kg"), "height_m": F(1.45, 2.0, "身高（米）", "height in m", 2)},
            ["我体重 {weight_kg} 公斤，身高 {height_m} 米，BMI 是多少？"],
            ["I weigh {weight_kg} kg and am {height_m} m tall. What's my BMI?"], "你的 BMI 是 {r[bmi]}。",
            "Your BMI is {r[bmi]}.")

# ------------------------------------------------------------------------------------------------ geometry
GEOMETRY = Family("geometry")
R = F(0.5, 50, "半径", "radius")
GEOMETRY.add("circle_area", lambda radius: math.pi * radius ** 2, "圆的面积", "Area of a circle", {"radius": R},
             ["半径 {radius} 的圆面积是多少？"], ["Area of a circle with radius {radius}?"], "面积约为 {r}。",
             "The area is about {r}.")
GEOMETRY.add("circle_circumference", lambda radius: 2 * math.pi * radius, "圆的周长", "Circumference of a circle",
             {"radius": R}, ["半径为 {radius} 的圆，周长多少？"], ["Circumference of a circle of radius {radius}?"],
             "周长约为 {r}。", "The circumference is about {r}.")
GEOMETRY.add("sphere_volume", lambda radius: 4 / 3 * math.pi * radius ** 3, "球的体积", "Volume of a sphere",
             {"radius": R}, ["半径 {radius} 的球体积是多少？"], ["Volume of a sphere with radius {radius}?"],
             "体积约为 {r}。", "The volume is about {r}.")
GEOMETRY.add("cylinder_volume", lambda radius, height: math.pi * radius ** 2 * height, "圆柱体的体积",
             "Volume of a cylinder", {"radius": R, "height": F(1, 100, "高", "height")},
             ["底面半径 {radius}、高 {height} 的圆柱体积多少？"], ["Volume of a cylinder, radius {radius}, height {height}?"],
             "体积约为 {r}。", "The volume is about {r}.")


def _heron(a, b, c):
    s = (a + b + c) / 2
    return math.sqrt(s * (s - a) * (s - b) * (s - c))


GEOMETRY.add("triangle_area", _heron, "已知三边长，用海伦公式求三角形面积", "Area of a triangle from its three sides (Heron)",
             {"a": I(3, 30, "边 a", "side a"), "b": I(3, 30, "边 b", "side b"), "c": I(3, 30, "边 c", "side c")},
             ["三角形三边是 {a}、{b}、{c}，面积多少？"], ["A triangle has sides {a}, {b} and {c}. What is its area?"],
             "面积约为 {r}。", "The area is about {r}.",
             check=lambda x: x["a"] + x["b"] > x["c"] and x["a"] + x["c"] > x["b"] and x["b"] + x["c"] > x["a"])
GEOMETRY.add("distance_2d", lambda x1, y1, x2, y2: math.dist((x1, y1), (x2, y2)), "平面上两点之间的距离",
             "Euclidean distance between two points in the plane",
             {k: I(-50, 50, f"坐标 {k}", f"coordinate {k}") for k in ("x1", "y1", "x2", "y2")},
             ["点 ({x1},{y1}) 到点 ({x2},{y2}) 的距离是多少？"], ["Distance from ({x1}, {y1}) to ({x2}, {y2})?"],
             "距离约为 {r}。", "The distance is about {r}.")


def _haversine(lat1, lon1, lat2, lon2):
    p1, p2, dp, dl = map(math.radians, (lat1, lat2, lat2 - lat1, lon2 - lon1))
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return round(2 * 6371.0088 * math.asin(math.sqrt(h)), 1)


GEOMETRY.add("great_circle_km", _haversine, "两个经纬度坐标之间的大圆距离（公里，平均地球半径 6371 km）",
             "Great-circle distance in km between two latitude/longitude points (mean Earth radius)",
             {"lat1": F(-60, 60, "起点纬度", "start latitude", 2), "lon1": F(-180, 180, "起点经度", "start longitude", 2),
              "lat2": F(-60, 60, "终点纬度", "end latitude", 2), "lon2": F(-180, 180, "终点经度", "end longitude", 2)},
             ["坐标 ({lat1}, {lon1}) 到 ({lat2}, {lon2}) 的球面距离有多少公里？"],
             ["How far is ({lat1}, {lon1}) from ({lat2}, {lon2}) in km?"], "大约 {r} 公里。", "About {r} km.")
GEOMETRY.add("regular_polygon_area", lambda sides,
             side_length: sides * side_length ** 2 / (4 * math.tan(math.pi / sides)),
             "正多边形的面积", "Area of a regular polygon from its number of sides and side length",
             {"sides": I(3, 12, "边数", "number of sides"), "side_length": F(1, 20, "边长", "side length")},
             ["边长 {side_length} 的正 {sides} 边形面积是多少？"], ["Area of a regular {sides}-gon with side {side_length}?"],
             "面积约为 {r}。", "The area is about {r}.")

# ------------------------------------------------------------------------------------------------ units
UNITS = Family("units")
TEMP = {"celsius": (1, 0), "fahrenheit": (5 / 9, -32), "kelvin": (1, -273.15)}


def _temperature(value, from_unit, to_unit):
    c = (value + TEMP[from_unit][1]) * TEMP[from_unit][0] if from_unit != "kelvin" else value - 273.15
    return round(c if to_unit == "celsius" else c * 9 / 5 + 32 if to_unit == "fahrenheit" else c + 273.15, 2)


UNITS.add("convert_temperature", _temperature, "在摄氏度、华氏度和开尔文之间换算温度",
          "Convert a temperature between celsius, fahrenheit and kelvin",
          {"value": F(-40, 120, "温度值", "temperature"), "from_unit": E(list(TEMP), "原单位", "source unit"),
           "to_unit": E(list(TEMP), "目标单位", "target unit")},
          ["{value} {from_unit} 等于多少 {to_unit}？", "把 {value} 度（{from_unit}）换算成 {to_unit}"],
          ["Convert {value} {from_unit} to {to_unit}.", "What is {value} degrees {from_unit} in {to_unit}?"],
          "{value} {from_unit} = {r} {to_unit}。", "{value} {from_unit} is {r} {to_unit}.",
          check=lambda x: x["from_unit"] != x["to_unit"])
FACTORS = {
    "length": {"mm": 0.001, "cm": 0.01, "m": 1, "km": 1000, "inch": 0.0254, "foot": 0.3048, "mile": 1609.344},
    "mass": {"g": 0.001, "kg": 1, "tonne": 1000, "pound": 0.45359237, "ounce": 0.028349523125, "jin": 0.5},
    "area": {"m2": 1, "km2": 1e6, "hectare": 1e4, "acre": 4046.8564224, "mu": 10000 / 15},
    "volume": {"ml": 1e-3, "l": 1, "m3": 1000, "us_gallon": 3.785411784, "us_cup": 0.2365882365},
    "speed": {"m/s": 1, "km/h": 1 / 3.6, "mph": 0.44704, "knot": 1852 / 3600},
    "data": {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3},
}
ZH_KIND = {"length": "长度", "mass": "质量", "area": "面积", "volume": "体积", "speed": "速度", "data": "数据大小"}
for kind, table in FACTORS.items():
    UNITS.add(f"convert_{kind}", lambda value, from_unit, to_unit,
              table=table: value * table[from_unit] / table[to_unit],
              f"{ZH_KIND[kind]}单位换算", f"Convert a {kind} value between units",
              {"value": F(0.5, 5000, "数值", "the value"), "from_unit": E(list(table), "原单位", "source unit"),
               "to_unit": E(list(table), "目标单位", "target unit")},
              ["{value} {from_unit} 是多少 {to_unit}？", "把 {value} {from_unit} 换算成 {to_unit}"],
              ["How many {to_unit} is {value} {from_unit}?", "Convert {value} {from_unit} to {to_unit}."],
              "{value} {from_unit} ≈ {r} {to_unit}。", "{value} {from_unit} is about {r} {to_unit}.",
              check=lambda x: x["from_unit"] != x["to_unit"])

FAMILIES = [MATH, STATS, FRACTION, BASES, FINANCE, GEOMETRY, UNITS]
