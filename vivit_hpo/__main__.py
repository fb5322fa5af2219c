from vivit_hpo.cli import main

main()
