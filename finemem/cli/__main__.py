from finemem.cli import main

main()
